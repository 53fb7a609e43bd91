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


def _best_threshold(scores: np.ndarray, labels: np.ndarray, default: float) -> float:
    """The F1-maximising midpoint threshold of one column (valid rows only)."""
    positives = int(labels.sum())
    if positives == 0 or positives == labels.size:
        return float(default)
    order = np.argsort(-scores, kind="stable")  # the one sort: descending scores
    ranked, hits = scores[order], labels[order]
    true_pos = np.cumsum(hits)
    false_pos = np.cumsum(1.0 - hits)
    # Keep the last row of each run of equal scores: "positive when >= u" takes the whole run.
    run_end = np.append(ranked[:-1] != ranked[1:], True)
    values, true_pos, false_pos = ranked[run_end], true_pos[run_end], false_pos[run_end]
    # F1 = 2TP / (2TP + FP + FN) with FN = positives - TP. Integer counts divided once are correctly
    # rounded, so equal F1 fractions compare equal and the tie rule below applies exactly.
    f1 = 2.0 * true_pos / (true_pos + false_pos + positives)
    lower = np.append(values[1:], values[-1])  # the lowest run keeps its own value
    candidates = (values + lower) / 2.0
    best = candidates[f1 == f1.max()]  # in descending order, so argmin's first pick is the higher
    return float(best[np.argmin(np.abs(best - 0.5))])
