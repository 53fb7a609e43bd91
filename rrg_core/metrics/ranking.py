"""Score- and similarity-based metrics: AUROC, retrieval Precision@K and UAR's alignment score.

Inputs may be numpy arrays, nested lists or torch tensors (moved to the CPU and
read as float64); nothing here imports torch or scikit-learn.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rrg_core.errors import RRGError
from rrg_core.observations import OBSERVATIONS

logger = logging.getLogger(__name__)

ALIGNMENT_THRESHOLD = 0.5
"""UAR's cut-off on the min-max normalised cosine similarity."""


def to_numpy(values: Any, *, dtype: Any = np.float64) -> np.ndarray:
    """An array copy of ``values`` (numpy, list or torch tensor, on any device)."""
    if hasattr(values, "detach"):  # a torch tensor; duck-typed so torch is not imported here
        values = values.detach().cpu()
        if values.is_floating_point():
            values = values.double()  # bfloat16/float16 have no numpy equivalent
        values = values.numpy()
    try:
        return np.array(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise RRGError(f"expected numbers in an array, got {type(values).__name__} ({exc})") from exc


# --- AUROC -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AurocSummary:
    """Per-observation AUROC (NaN where undefined) and their mean over the defined ones."""

    per_observation: dict[str, float]
    mean: float
    num_defined: int
    #: Per defined observation its ROC curve, ``{"fpr": [...], "tpr": [...]}`` (the model card draws them).
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    @property
    def mean_or_none(self) -> float | None:
        """``mean`` as JSON can hold it: None where no observation is defined (JSON has no NaN)."""
        return None if math.isnan(self.mean) else self.mean

    def per_observation_or_none(self) -> dict[str, float | None]:
        """``per_observation`` as JSON can hold it: None where an observation is undefined."""
        return {name: (None if math.isnan(value) else value) for name, value in self.per_observation.items()}


def auroc(targets: Any, scores: Any) -> float:
    """Area under the ROC curve of ``scores`` for binary ``targets`` (one observation).

    Computed as the Mann-Whitney statistic: the share of (positive, negative) pairs in
    which the positive scores higher, a tie counting half (mid-ranks), which equals the
    trapezoidal ROC area that scikit-learn's ``roc_auc_score`` gives.

    Args:
        targets: shape (N,), 1/True positive, 0/False negative.
        scores: shape (N,), higher means more likely positive.

    Returns:
        The AUROC, or NaN when only one class is present (it is undefined then).

    Raises:
        RRGError: different shapes, no samples, targets other than 0/1, non-finite scores.
    """
    y = _binary_vector(targets, "targets")
    s = _finite(to_numpy(scores), "scores")
    if s.ndim != 1 or s.shape != y.shape:
        raise RRGError(f"targets and scores must be 1-D of the same length, got {y.shape} and {s.shape}")
    if y.size == 0:
        raise RRGError("no samples to compute an AUROC from")
    return _mann_whitney_auc(y, s)


def _mann_whitney_auc(y: np.ndarray, s: np.ndarray) -> float:
    positives = int(y.sum())
    negatives = y.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # The mid-rank of a group of tied scores: the mean of the 1-based ranks it spans.
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = mid_ranks[inverse.reshape(-1)][y].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def auroc_per_observation(
    targets: Any, scores: Any, observations: Sequence[str] = OBSERVATIONS
) -> AurocSummary:
    """AUROC for each observation (column) and their mean, as DCRRG's Table 6 ("Average AUROC").

    Args:
        targets: shape (N, K), 1/0 per report and observation; NaN marks a label to skip
            (e.g. an uncertain one), which drops that sample from that column only.
        scores: shape (N, K), the predicted scores or probabilities.
        observations: the K column names (default: the 14 CheXpert observations).

    Returns:
        :class:`AurocSummary`; an observation with only one class present is NaN and left
        out of the mean, ``num_defined`` says how many the mean covers (NaN if none).

    Raises:
        RRGError: shape mismatch, no rows, targets other than 0/1/NaN, non-finite scores.
    """
    names = tuple(observations)
    y = to_numpy(targets)
    s = _finite(to_numpy(scores), "scores")
    if y.ndim != 2 or y.shape != s.shape or y.shape[1] != len(names):
        raise RRGError(
            f"targets and scores must both be (N, {len(names)}) for {len(names)} observations, "
            f"got {y.shape} and {s.shape}"
        )
    if y.shape[0] == 0:
        raise RRGError("no samples to compute an AUROC from")
    per_observation, curves = {}, {}
    for j, name in enumerate(names):
        keep = ~np.isnan(y[:, j])
        column = _binary_vector(y[keep, j], f"targets for {name}")
        per_observation[name] = _mann_whitney_auc(column, s[keep, j])
        if not math.isnan(per_observation[name]):
            curves[name] = roc_curve(column, s[keep, j])
    defined = [value for value in per_observation.values() if not math.isnan(value)]
    mean = float(np.mean(defined)) if defined else math.nan
    return AurocSummary(per_observation, mean, len(defined), curves)


def roc_curve(targets: np.ndarray, scores: np.ndarray, points: int = 101) -> dict[str, list[float]]:
    """The ROC curve of one observation: false and true positive rates as the threshold falls through
    every distinct score (ties step together), thinned to about ``points`` points for storage."""
    order = np.argsort(-scores, kind="stable")
    ranked, positive = scores[order], targets[order].astype(float)
    last_of_tie = np.r_[np.diff(ranked) != 0, True]
    tp, fp = np.cumsum(positive)[last_of_tie], np.cumsum(1 - positive)[last_of_tie]
    tpr = np.r_[0.0, tp / max(tp[-1], 1.0)]
    fpr = np.r_[0.0, fp / max(fp[-1], 1.0)]
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(points, len(fpr))).round().astype(int))
    return {"fpr": [round(float(v), 4) for v in fpr[keep]], "tpr": [round(float(v), 4) for v in tpr[keep]]}


def _binary_vector(values: Any, what: str) -> np.ndarray:
    array = to_numpy(values)
    if array.ndim != 1:
        raise RRGError(f"{what} must be 1-D, got shape {array.shape}")
    if not np.all((array == 0) | (array == 1)):
        raise RRGError(f"{what} must be 0/1 (or True/False); map uncertain labels first")
    return array.astype(bool)


def _finite(array: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(array)):
        raise RRGError(f"{what} contain NaN or infinite values")
    return array


# --- Retrieval Precision@K -------------------------------------------------------------------------


def category_relevance(query_categories: Any, candidate_categories: Any) -> np.ndarray:
    """(Q, N) booleans: candidate n is relevant to query q when they share a category.

    This is the CheXpert-5x200 retrieval set-up DCRRG follows: a retrieved report is
    correct when it belongs to the query image's category. Categories may be ints or
    strings (any values that compare equal).
    """
    queries = _category_vector(query_categories, "query_categories")
    candidates = _category_vector(candidate_categories, "candidate_categories")
    return queries[:, None] == candidates[None, :]


def _category_vector(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values)
    if array.ndim != 1 or array.size == 0:
        raise RRGError(f"{what} must be a non-empty 1-D sequence, got shape {array.shape}")
    return array


def precision_at_k(similarity: Any, relevance: Any, k: int) -> float:
    """Mean over queries of (relevant items among the top ``k`` by similarity) / ``k``.

    Args:
        similarity: shape (Q, N), higher is more similar (e.g. image-to-report cosine).
        relevance: shape (Q, N), True where candidate n is a correct answer to query q
            (see :func:`category_relevance`).
        k: how many top candidates each query retrieves, 1 <= k <= N.

    Ties in similarity are broken by candidate index (lower first, a stable sort), so
    the result is deterministic.

    Raises:
        RRGError: shape mismatch, empty input, non-finite similarities, k out of range.
    """
    return precision_at_ks(similarity, relevance, (k,))[k]


def precision_at_ks(similarity: Any, relevance: Any, ks: Iterable[int] = (1, 2, 5, 10)) -> dict[int, float]:
    """:func:`precision_at_k` for several ``k`` with one sort (default: DCRRG Table 2's 1, 2, 5, 10)."""
    sim = _finite(to_numpy(similarity), "similarities")
    rel = to_numpy(relevance)
    if sim.ndim != 2 or sim.shape != rel.shape or sim.size == 0:
        raise RRGError(
            f"similarity and relevance must be non-empty (queries, candidates) matrices of one shape, "
            f"got {sim.shape} and {rel.shape}"
        )
    if not np.all((rel == 0) | (rel == 1)):
        raise RRGError("relevance must be True/False (or 1/0)")
    ks = tuple(ks)
    if not ks:
        raise RRGError("no k given")
    for k in ks:
        _check_k(k, sim.shape[1])
    # Stable sort of the negated scores: descending similarity, ties in index order.
    order = np.argsort(-sim, axis=1, kind="stable")[:, : max(ks)]
    hits = np.take_along_axis(rel.astype(bool), order, axis=1)
    return {k: float(hits[:, :k].sum(axis=1).mean() / k) for k in ks}


def chance_precision(relevance: Any) -> float:
    """The P@K a random ranking scores on average, for every K: the mean over queries of the share of
    candidates relevant to them. P@K means little without it when one answer dominates (in IU X-ray
    most studies share the "No Finding" label set, so a random report is often relevant)."""
    rel = to_numpy(relevance)
    if rel.ndim != 2:
        raise RRGError(f"relevance must be a non-empty (queries, candidates) matrix, got shape {rel.shape}")
    # At K = N every ranking retrieves every candidate, so P@N (checked like any P@K) is the average.
    n = max(rel.shape[1], 1)  # an empty matrix is refused as such, not for its K
    return precision_at_ks(np.zeros(rel.shape), rel, (n,))[n]


def _check_k(k: object, candidates: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise RRGError(f"k must be an integer, got {k!r}")
    if not 1 <= k <= candidates:
        raise RRGError(f"k must be between 1 and the number of candidates ({candidates}), got {k}")


# --- UAR alignment score ---------------------------------------------------------------------------


def alignment_score(image_features: Any, report_features: Any) -> float:
    """UAR's alignment score: the share of matched image-report pairs that look aligned.

    UAR (footnote 3) defines it as "the portion of radiograph-report pairs whose cosine
    similarity of features is larger than 0.5 after min-max normalization". Read here
    as: the cosine similarity of every image with every report (an N x N matrix, as in
    UAR's Figure 4 heat maps), min-max normalised over the whole matrix, then the share
    of the N matched pairs (the diagonal) strictly above 0.5. The paper does not say
    over what the min and max are taken; the whole matrix is our choice.

    Args:
        image_features: shape (N, d), row i the features of radiograph i.
        report_features: shape (N, d), row i the features of report i (its pair).

    Returns:
        A share in [0, 1], or NaN when the similarity matrix is constant (N = 1, or all
        features parallel), since min-max normalisation is undefined then.

    Raises:
        RRGError: shapes differ or are not 2-D, N or d is 0, non-finite values, or a
            zero feature vector (its cosine similarity is undefined).
    """
    images = _unit_rows(image_features, "image_features")
    reports = _unit_rows(report_features, "report_features")
    if images.shape != reports.shape:
        raise RRGError(
            f"image and report features must have one shape, got {images.shape} and {reports.shape}"
        )
    similarity = images @ reports.T
    low, high = float(similarity.min()), float(similarity.max())
    # Rounding can make "equal" cosines differ in the last bits; treat that as constant too.
    if high - low <= 1e-12:
        logger.debug("alignment score undefined: constant similarity matrix (%d pairs)", len(images))
        return math.nan
    matched = (np.diagonal(similarity) - low) / (high - low)
    return float(np.mean(matched > ALIGNMENT_THRESHOLD))


def _unit_rows(features: Any, what: str) -> np.ndarray:
    array = _finite(to_numpy(features), what)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise RRGError(f"{what} must be a non-empty (N, d) matrix, got shape {array.shape}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        rows = zero[:10].tolist()
        raise RRGError(f"{what} has zero vectors (rows {rows}); their cosine similarity is undefined")
    return array / norms
