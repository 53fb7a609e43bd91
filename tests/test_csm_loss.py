"""Calibrated semantic matching loss (DCRRG eqs 3-9): hand-computed values, reductions, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional

from rrg_core.models.dcrrg.losses import (
    INITIAL_LOGIT_SCALE,
    MAX_LOGIT_SCALE,
    calibrated_semantic_matching_loss,
    calibration_weights,
    label_similarity,
)


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def _soft_ce(logit_rows: list[list[float]], target_rows: list[list[float]]) -> float:
    total = 0.0
    for logits, targets in zip(logit_rows, target_rows, strict=True):
        probs = _softmax(logits)
        total -= sum(y * math.log(p) for y, p in zip(targets, probs, strict=True))
    return total / len(logit_rows)


def test_hand_computed_two_by_two() -> None:
    """Every equation written out in plain Python for N = 2 and compared with the tensor version."""
    v_p, t_p = [[1.0, 0.0], [0.6, 0.8]], [[0.8, 0.6], [0.0, 1.0]]
    l_img, l_txt = [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], [[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    v, t = [[1.0, 2.0, 0.0], [2.0, 1.0, 1.0]], [[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]
    scale = 1.0 / 0.07
    s = [[_cos(l_img[i], l_txt[j]) for j in range(2)] for i in range(2)]
    w = [[_cos(t[i], t[j]) / 2 + 0.5 for j in range(2)] for i in range(2)]
    w_hat = [[_cos(v[j], v[i]) / 2 + 0.5 for i in range(2)] for j in range(2)]
    y_v2t = [_softmax([w[i][j] * s[i][j] for j in range(2)]) for i in range(2)]
    y_t2v = [_softmax([w_hat[j][i] * s[i][j] for i in range(2)]) for j in range(2)]
    logits = [[scale * _cos(v_p[i], t_p[j]) for j in range(2)] for i in range(2)]
    logits_t = [[logits[i][j] for i in range(2)] for j in range(2)]
    expected = (_soft_ce(logits, y_v2t) + _soft_ce(logits_t, y_t2v)) / 2

    got = calibrated_semantic_matching_loss(
        *(torch.tensor(x, dtype=torch.float64) for x in (v_p, t_p, l_img, l_txt, v, t)),
        torch.tensor(math.log(scale), dtype=torch.float64),
    )
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_identity_labels_and_unit_weights_give_soft_clip() -> None:
    """Distinct one-hot labels and identical uni-modal embeddings (w = 1): targets softmax(I)."""
    torch.manual_seed(0)
    n = 5
    image_emb, text_emb = torch.randn(n, 8), torch.randn(n, 8)
    labels = torch.eye(n, 14)
    same = torch.ones(n, 4)  # all rows equal -> cosine 1 -> w = 1
    scale = torch.tensor(INITIAL_LOGIT_SCALE)
    loss = calibrated_semantic_matching_loss(image_emb, text_emb, labels, labels, same, same, scale)
    logits = (
        math.exp(INITIAL_LOGIT_SCALE)
        * functional.normalize(image_emb, dim=-1)
        @ (functional.normalize(text_emb, dim=-1).T)
    )
    targets = torch.eye(n).softmax(dim=1)
    expected = (functional.cross_entropy(logits, targets) + functional.cross_entropy(logits.T, targets)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradients_reach_embeddings_and_temperature_but_not_calibration_inputs() -> None:
    torch.manual_seed(1)
    image_emb = torch.randn(4, 6, requires_grad=True)
    text_emb = torch.randn(4, 6, requires_grad=True)
    image_uni = torch.randn(4, 10, requires_grad=True)
    text_uni = torch.randn(4, 7, requires_grad=True)
    scale = torch.tensor(INITIAL_LOGIT_SCALE, requires_grad=True)
    labels = (torch.rand(4, 14) > 0.5).float()
    loss = calibrated_semantic_matching_loss(image_emb, text_emb, labels, labels, image_uni, text_uni, scale)
    loss.backward()
    for tensor in (image_emb, text_emb, scale):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0
    # Calibration weights are detached: the targets carry no gradient.
    assert image_uni.grad is None and text_uni.grad is None


def test_temperature_is_clamped_like_clip() -> None:
    image_emb, text_emb = torch.randn(3, 4), torch.randn(3, 4)
    labels, uni = torch.eye(3, 14), torch.randn(3, 5)
    big = calibrated_semantic_matching_loss(image_emb, text_emb, labels, labels, uni, uni, torch.tensor(9.0))
    cap = calibrated_semantic_matching_loss(
        image_emb, text_emb, labels, labels, uni, uni, torch.tensor(MAX_LOGIT_SCALE)
    )
    assert big.item() == pytest.approx(cap.item())


def test_all_zero_label_rows() -> None:
    labels_a = torch.tensor([[0.0] * 14, [1.0] + [0.0] * 13, [0.0] * 14])
    s = label_similarity(labels_a, labels_a)
    assert torch.equal(s, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]))
    loss = calibrated_semantic_matching_loss(
        torch.randn(3, 4), torch.randn(3, 4), labels_a, labels_a, torch.randn(3, 5), torch.randn(3, 5),
        torch.tensor(INITIAL_LOGIT_SCALE),
    )  # fmt: skip
    assert torch.isfinite(loss)


def test_batch_of_one() -> None:
    """One pair: both softmaxes have a single entry, so the loss is exactly zero and finite."""
    labels = torch.zeros(1, 14)
    loss = calibrated_semantic_matching_loss(
        torch.randn(1, 4), torch.randn(1, 4), labels, labels, torch.randn(1, 3), torch.randn(1, 3),
        torch.tensor(INITIAL_LOGIT_SCALE),
    )  # fmt: skip
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_calibration_weights_range() -> None:
    uni = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    w = calibration_weights(uni)
    assert torch.allclose(w, torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.5, 0.5, 1.0]]))


def test_mismatched_batch_raises() -> None:
    with pytest.raises(ValueError, match="rows"):
        calibrated_semantic_matching_loss(
            torch.randn(2, 4), torch.randn(3, 4), torch.zeros(2, 14), torch.zeros(2, 14),
            torch.randn(2, 3), torch.randn(2, 3), torch.tensor(1.0),
        )  # fmt: skip
