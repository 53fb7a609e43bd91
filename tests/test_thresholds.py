"""choose_thresholds: F1-maximising per-observation cut-offs, checked on cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rrg_core.errors import RRGError
from rrg_core.metrics import choose_thresholds

NAN = math.nan


def _column(scores: list[float], labels: list[float], **kwargs) -> float:
    return choose_thresholds(np.array(scores)[:, None], np.array(labels)[:, None], **kwargs)[0]


def test_perfect_separation_cuts_halfway_between_the_classes():
    # negatives 0.1, 0.2; positives 0.7, 0.9: F1 = 1 only for "positive from 0.7", cut at (0.7+0.2)/2
    assert _column([0.1, 0.9, 0.2, 0.7], [0, 1, 0, 1]) == pytest.approx(0.45)


def test_one_class_columns_keep_the_default():
    assert _column([0.1, 0.8, 0.3], [0, 0, 0]) == 0.5
    assert _column([0.1, 0.8, 0.3], [1, 1, 1], default=0.3) == 0.3


def test_nan_targets_are_ignored():
    # Without the NaN rows (a negative at 0.95, a positive at 0.05) the split is perfect.
    scores = [0.1, 0.9, 0.2, 0.7, 0.95, 0.05]
    assert _column(scores, [0, 1, 0, 1, NAN, NAN]) == pytest.approx(0.45)
    # Only NaN and one class left: default.
    assert _column(scores, [0, NAN, 0, NAN, NAN, NAN], default=0.25) == 0.25


def test_overlapping_classes_pick_the_best_f1():
    # descending: 0.9+ 0.8- 0.6+ 0.4+ 0.3-; P = 3.
    # cut at 0.9: F1 = 2/4; 0.8: 2/5; 0.6: 4/6; 0.4: 6/7 (best); 0.3: 6/8.
    assert _column([0.3, 0.4, 0.6, 0.8, 0.9], [0, 1, 1, 0, 1]) == pytest.approx((0.4 + 0.3) / 2)


def test_equal_scores_move_together_and_the_lowest_run_keeps_its_value():
    # Two rows at 0.2 (one positive, one negative) and one positive at 0.6; P = 2.
    # ">= 0.6": F1 = 2/3; ">= 0.2": TP 2, FP 1 -> 4/5 (best), the lowest run: threshold 0.2 itself.
    assert _column([0.2, 0.6, 0.2], [1, 1, 0]) == pytest.approx(0.2)


def test_ties_go_to_the_threshold_closest_to_half():
    # + - - + with P = 2: ">= first" gives F1 2/3, ">= last" (everything) 4/6 = 2/3 too, the others less.
    assert _column([0.9, 0.8, 0.6, 0.4], [1, 0, 0, 1]) == pytest.approx(0.4)  # 0.85 vs 0.4
    assert _column([0.6, 0.55, 0.3, 0.1], [1, 0, 0, 1]) == pytest.approx(0.575)  # 0.575 vs 0.1
    # Equally close (0.75 and 0.25 around 0.5): the higher wins.
    assert _column([0.8, 0.7, 0.5, 0.25], [1, 0, 0, 1]) == pytest.approx(0.75)


def test_columns_are_independent_and_tensors_are_accepted():
    probabilities = torch.tensor([[0.1, 0.8], [0.9, 0.4], [0.2, 0.7], [0.7, 0.1]])
    targets = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, NAN], [1.0, 0.0]])
    thresholds = choose_thresholds(probabilities, targets)
    assert thresholds == pytest.approx([0.45, 0.6])  # column 2 without its NaN row: 0.8+ | 0.4- 0.1-
    assert all(isinstance(t, float) for t in thresholds)


def test_fourteen_observations_random_inputs_give_valid_thresholds():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, size=(50, 14)).astype(float)
    targets[rng.random((50, 14)) < 0.2] = NAN
    probabilities = np.clip(0.5 * targets + 0.5 * rng.random((50, 14)), 0, 1)
    probabilities = np.nan_to_num(probabilities, nan=0.3)
    thresholds = choose_thresholds(probabilities, targets)
    assert len(thresholds) == 14 and all(0.0 <= t <= 1.0 for t in thresholds)
    # Each chosen cut is at least as good as the default 0.5 on its column.
    for k, t in enumerate(thresholds):
        keep = ~np.isnan(targets[:, k])
        scores, truth = probabilities[keep, k], targets[keep, k]
        assert _f1(scores >= t, truth) >= _f1(scores >= 0.5, truth)


def _f1(predicted: np.ndarray, truth: np.ndarray) -> float:
    tp = float((predicted & (truth == 1)).sum())
    return 2 * tp / (predicted.sum() + (truth == 1).sum())


def test_bad_inputs_are_refused():
    with pytest.raises(RRGError, match="one shape"):
        choose_thresholds(np.zeros((3, 14)), np.zeros((3, 13)))
    with pytest.raises(RRGError, match="finite"):
        choose_thresholds(np.full((2, 1), NAN), np.zeros((2, 1)))
    with pytest.raises(RRGError, match="0, 1 or NaN"):
        choose_thresholds(np.zeros((2, 1)), np.full((2, 1), 2.0))
    with pytest.raises(RRGError, match="default"):
        choose_thresholds(np.zeros((2, 1)), np.zeros((2, 1)), default=1.5)
