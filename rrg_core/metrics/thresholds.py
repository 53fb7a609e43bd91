"""Per-observation decision thresholds chosen on a validation split (DCRRG Table 7's labels).

:func:`choose_thresholds` picks, for each observation, the cut-off ``t`` that maximises the F1 of
"positive when probability >= t" against the reference labels.

Candidate thresholds: predictions only change when ``t`` crosses one of the observed probabilities,
so there is one candidate per distinct probability ``u`` (predict positive for everything at or above
``u``). Rather than ``u`` itself, the candidate is the *midpoint* between ``u`` and the next lower
distinct probability: it gives the same predictions on the validation studies, and a cut halfway
between two observed scores is less sensitive to small score shifts on new studies than one lying on
a validation score. The lowest distinct probability (everything positive) keeps its own value.
"Nothing positive" is never a candidate: its F1 is 0, below "everything positive" whenever there
are positives.

Ties in F1 go to the candidate closest to 0.5 (the untuned default), and between two equally close
ones to the higher (fewer positives). An observation whose valid targets are all of one class has
no meaningful F1 optimum and keeps ``default``.

Numpy only, like the rest of :mod:`rrg_core.metrics`; inputs may be torch tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rrg_core.errors import RRGError
from rrg_core.metrics.ranking import to_numpy


def choose_thresholds(probabilities: Any, targets: Any, *, default: float = 0.5) -> list[float]:
    """One threshold per column: the F1-maximising cut on ``probabilities`` (module docstring).

    Args:
        probabilities: (N, K) scores in [0, 1] (K = 14 observations for DCRRG Step 1).
        targets: (N, K) reference labels, 1 positive, 0 negative, NaN = not scored (e.g. uncertain).
        default: the threshold of a column with no positives or no negatives among its valid targets.

    Raises:
        RRGError: shapes differ or are not 2-D, non-finite probabilities, targets other than 0/1/NaN,
            or ``default`` outside [0, 1].
    """
    scores = to_numpy(probabilities)
    labels = to_numpy(targets)
    if scores.ndim != 2 or scores.shape != labels.shape:
        raise RRGError(
            f"probabilities and targets must be (N, K) of one shape, got {scores.shape} and {labels.shape}"
        )
    if not np.all(np.isfinite(scores)):
        raise RRGError("probabilities must be finite")
    known = ~np.isnan(labels)
    if not np.all((labels[known] == 0) | (labels[known] == 1)):
        raise RRGError("targets must be 0, 1 or NaN")
    if not 0.0 <= default <= 1.0:
        raise RRGError(f"default threshold must be in [0, 1], got {default}")
    return [
        _best_threshold(scores[known[:, k], k], labels[known[:, k], k], default)
        for k in range(scores.shape[1])
    ]


def choose_micro_thresholds(
    probabilities: Any, targets: Any, *, default: float = 0.5, rounds: int = 3
) -> list[float]:
    """Thresholds that maximise the *micro* F1 over all columns together, by coordinate ascent.

    Per-column F1 optima are a poor rule for a report's micro F1: a weak detector's F1 optimum is
    often "call many positives" (on a rare, barely separable finding, F1 0.07 beats F1 0), and those
    false positives cost every other column's precision. Micro F1 counts them where they fall.
    Starting from :func:`choose_thresholds`, each round sets each column in turn to the candidate
    (the midpoints of the module docstring, plus 1.0: "nothing positive") that maximises the micro
    F1 with the other columns fixed; ties go to the candidate closest to 0.5. Arguments and errors
    as :func:`choose_thresholds`.
    """
    thresholds = choose_thresholds(probabilities, targets, default=default)
    scores, labels = to_numpy(probabilities), to_numpy(targets)
    known = ~np.isnan(labels)
    columns = [_column_cuts(scores[known[:, k], k], labels[known[:, k], k]) for k in range(scores.shape[1])]
    counts = np.array([_counts_at(cuts, t) for cuts, t in zip(columns, thresholds, strict=True)])
    for _ in range(rounds):
        for k, cuts in enumerate(columns):
            if cuts is None:
                continue
            tp_rest, fp_rest, fn_rest = counts.sum(0) - counts[k]
            candidates, true_pos, false_pos, positives = cuts
            true_all = tp_rest + true_pos
            f1 = 2.0 * true_all / (2.0 * true_all + fp_rest + false_pos + fn_rest + positives - true_pos)
            best = np.flatnonzero(f1 == f1.max())
            pick = best[np.argmin(np.abs(candidates[best] - 0.5))]
            thresholds[k] = float(candidates[pick])
            counts[k] = (true_pos[pick], false_pos[pick], positives - true_pos[pick])
    return thresholds


def _column_cuts(scores: np.ndarray, labels: np.ndarray) -> tuple | None:
    """(candidates, true positives, false positives at each, positives) of one column, "nothing
    positive" (1.0) included; None for a column with one class only (it keeps its threshold)."""
    positives = int(labels.sum())
    if positives == 0 or positives == labels.size:
        return None
    candidates, true_pos, false_pos = _cut_counts(scores, labels)
    at_one = scores >= 1.0
    candidates = np.append(candidates, 1.0)
    true_pos = np.append(true_pos, labels[at_one].sum())
    false_pos = np.append(false_pos, (1.0 - labels[at_one]).sum())
    return candidates, true_pos, false_pos, positives


def _counts_at(cuts: tuple | None, threshold: float) -> tuple[float, float, float]:
    """(TP, FP, FN) of one column at one of its candidate thresholds (0s for a one-class column,
    which the ascent never moves, so its counts cancel in every comparison)."""
    if cuts is None:
        return (0.0, 0.0, 0.0)
    candidates, true_pos, false_pos, positives = cuts
    i = int(np.argmin(np.abs(candidates - threshold)))
    return (float(true_pos[i]), float(false_pos[i]), float(positives - true_pos[i]))


def _cut_counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The midpoint candidates of one column (module docstring), highest first, with the true and
    false positives of "positive when >= candidate" at each."""
    order = np.argsort(-scores, kind="stable")  # the one sort: descending scores
    ranked, hits = scores[order], labels[order]
    true_pos = np.cumsum(hits)
    false_pos = np.cumsum(1.0 - hits)
    # Keep the last row of each run of equal scores: "positive when >= u" takes the whole run.
    run_end = np.append(ranked[:-1] != ranked[1:], True)
    values, true_pos, false_pos = ranked[run_end], true_pos[run_end], false_pos[run_end]
    lower = np.append(values[1:], values[-1])  # the lowest run keeps its own value
    return (values + lower) / 2.0, true_pos, false_pos


def _best_threshold(scores: np.ndarray, labels: np.ndarray, default: float) -> float:
    """The F1-maximising midpoint threshold of one column (valid rows only)."""
    positives = int(labels.sum())
    if positives == 0 or positives == labels.size:
        return float(default)
    candidates, true_pos, false_pos = _cut_counts(scores, labels)
    # F1 = 2TP / (2TP + FP + FN) with FN = positives - TP. Integer counts divided once are correctly
    # rounded, so equal F1 fractions compare equal and the tie rule below applies exactly.
    f1 = 2.0 * true_pos / (true_pos + false_pos + positives)
    best = candidates[f1 == f1.max()]  # in descending order, so argmin's first pick is the higher
    return float(best[np.argmin(np.abs(best - 0.5))])
