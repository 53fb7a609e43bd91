"""CRA (UAR eqs 6-10): orthonormal basis, attention over it, dual gate, triplet loss with hard negatives."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from rrg_core.models.uar.cra import (
    CRA,
    CRAConfig,
    make_basis,
    masked_mean,
    orthonormal_basis,
)
from rrg_core.models.uar.losses import triplet_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**overrides) -> CRA:
    torch.manual_seed(0)
    return CRA(CRAConfig(d_model=16, n_heads=4, n_basis=64, dropout=0.0, **overrides)).eval()


def test_tall_basis_has_orthonormal_columns() -> None:
    basis = orthonormal_basis(2048, 64, torch.Generator().manual_seed(0))
    assert basis.shape == (2048, 64)
    assert torch.allclose(basis.T @ basis, torch.eye(64), atol=1e-5)


def test_wide_basis_has_orthonormal_rows() -> None:
    basis = orthonormal_basis(8, 32, torch.Generator().manual_seed(0))
    assert basis.shape == (8, 32)
    assert torch.allclose(basis @ basis.T, torch.eye(8), atol=1e-5)


def test_basis_is_a_fixed_buffer_reproducible_by_seed() -> None:
    cra = tiny()
    assert "basis" in dict(cra.named_buffers()) and "basis" in cra.state_dict()
    assert not any(p is cra.basis for p in cra.parameters())
    assert torch.equal(cra.basis, tiny().basis)
    assert not torch.equal(cra.basis, tiny(seed=1).basis)
    assert torch.allclose(cra.basis.T @ cra.basis, torch.eye(16), atol=1e-5)


@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_table3_subspaces_have_the_orthonormal_entry_scale(kind: str) -> None:
    basis = make_basis(kind, 512, 64)
    assert basis.shape == (512, 64)
    assert float(basis.std()) == pytest.approx(512**-0.5, rel=0.05)
    with pytest.raises(ValueError, match="basis kind"):
        make_basis("sphere", 4, 4)


def test_eq6_gain_and_bias_adjust_the_basis() -> None:
    cra = tiny()
    assert torch.equal(cra.adjusted_basis(), cra.basis)  # gain 1, bias 0 at the start
    with torch.no_grad():
        cra.gain.fill_(2.0)
        cra.bias.fill_(0.5)
    assert torch.allclose(cra.adjusted_basis(), 2 * cra.basis + 0.5)


def test_attention_over_the_basis_is_a_distribution_per_position() -> None:
    cra = tiny()
    x = torch.randn(3, 5, 16)
    attended, weights = cra.attend(x, return_weights=True)
    assert attended.shape == (3, 5, 16) and weights.shape == (3, 4, 5, 64)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 4, 5), atol=1e-5)


def test_dual_gate_in_range_and_eq9() -> None:
    cra = tiny().requires_grad_(False)
    x = torch.randn(2, 7, 16) * 10  # large inputs: the gates must still stay within (0, 1)
    attended = cra.attend(x)
    g_in, g_forget = cra.gates(x, attended)
    for gate in (g_in, g_forget):
        assert gate.shape == x.shape
        assert bool(((gate >= 0) & (gate <= 1)).all())
        assert 0.0 < gate.mean().item() < 1.0
    expected = g_in * torch.tanh(x + attended) + g_forget * x + attended
    assert torch.allclose(cra(x), expected, atol=1e-5)


def test_table4_fusion_variants() -> None:
    x = torch.randn(2, 3, 16)
    none, addition = tiny(fusion="none"), tiny(fusion="addition")
    assert torch.allclose(none(x), none.attend(x))
    assert torch.allclose(addition(x), x + addition.attend(x))
    with pytest.raises(ValueError, match="fusion"):
        CRAConfig(fusion="concat")


def test_positions_are_processed_independently() -> None:
    """CRA never mixes positions, so the decoder may apply it to a report token by token."""
    cra = tiny()
    x = torch.randn(1, 6, 16)
    whole = cra(x)
    assert torch.allclose(whole[:, 2:3], cra(x[:, 2:3]), atol=1e-5)
    changed = x.clone()
    changed[:, 4] += 1.0
    assert torch.allclose(cra(changed)[:, :4], whole[:, :4], atol=1e-6)


def test_cra_gradients_reach_gain_bias_and_gates() -> None:
    cra = tiny().train()
    cra(torch.randn(2, 3, 16)).square().sum().backward()
    for name in ("gain", "bias", "input_gate.w1.weight", "forget_gate.w2.weight", "attention.q_proj.weight"):
        assert dict(cra.named_parameters())[name].grad.abs().sum() > 0, name
    assert cra.basis.grad is None


def test_masked_mean() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert torch.allclose(masked_mean(x, torch.tensor([[True, True, False]])), torch.tensor([[2.0]]))
    assert torch.allclose(masked_mean(x), torch.tensor([[104.0 / 3]]))


def test_triplet_loss_is_zero_when_positives_beat_negatives_by_more_than_the_margin() -> None:
    # Matched pairs identical, different pairs orthogonal: s_ii = 1, s_ij = 0, margin 0.2 < 1.
    images = torch.eye(4, 8) * 3
    reports = torch.eye(4, 8)
    assert float(triplet_loss(images, reports, margin=0.2)) == 0.0


def test_triplet_loss_is_positive_within_the_margin_and_uses_the_hardest_negative() -> None:
    images = torch.eye(3, 8)
    reports = torch.eye(3, 8)
    reports[0, 1] = 1.0  # report 0 leans towards image 1: cos(image1, report0) = 1/sqrt(2)
    s = 2**-0.5
    loss = triplet_loss(images, reports, margin=0.5)
    # Pair 0: s_00 = s, anchor image 0 hardest report is 0 (all others 0) -> relu(0.5 - s + 0);
    # anchor report 0 hardest image is image 1 (s) -> relu(0.5 - s + s) = 0.5.
    # Pair 1: s_11 = 1; anchor image 1 hardest report is report 0 (s) -> relu(0.5 - 1 + s); report 1: 0.
    # Pair 2: all negatives 0 -> 0.
    expected = (max(0.5 - s, 0) + 0.5 + max(0.5 - 1 + s, 0)) / 3
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    assert float(loss) > 0


def test_triplet_loss_swapped_pairs_is_large() -> None:
    features = functional.normalize(torch.randn(4, 8), dim=-1)
    assert float(triplet_loss(features, features.roll(1, dims=0), margin=0.2)) > 0.2


def test_triplet_loss_excluded_pairs_are_not_negatives_and_batch_of_one_is_zero() -> None:
    images = torch.eye(2, 4)
    reports = torch.eye(2, 4).flip(0)  # each report matches the other image
    assert float(triplet_loss(images, reports, margin=0.2)) > 0
    exclude = torch.ones(2, 2, dtype=torch.bool)
    loss = triplet_loss(images.requires_grad_(), reports, margin=0.2, exclude=exclude)
    assert loss.item() == 0.0  # every other pair excluded: no negatives, nothing to push apart
    loss.backward()
    assert torch.isfinite(images.grad).all()
    single = triplet_loss(torch.randn(1, 4), torch.randn(1, 4))
    assert float(single) == 0.0


def test_triplet_loss_over_all_negatives_averages_each_anchors_hinges() -> None:
    images = torch.eye(3, 8)
    reports = torch.eye(3, 8)
    reports[0, 1] = 1.0  # as above: cos(image 1, report 0) = s, every other off-diagonal cosine 0
    s = 2**-0.5
    loss = triplet_loss(images, reports, margin=0.5, hardest=False)
    # Image anchors (rows): image 0 (s_00 = s) sees reports 1, 2 at 0 -> relu(0.5 - s) twice;
    # image 1 (s_11 = 1) sees report 0 at s -> relu(0.5 - 1 + s) and report 2 -> 0; image 2: 0.
    # Report anchors (columns): report 0 sees image 1 at s -> relu(0.5 - s + s) = 0.5 and image 2 at 0
    # -> relu(0.5 - s); reports 1 and 2: their negatives at 0 against s_jj = 1 -> 0.
    rows = (2 * max(0.5 - s, 0)) / 2 + max(0.5 - 1 + s, 0) / 2
    columns = (0.5 + max(0.5 - s, 0)) / 2
    assert float(loss) == pytest.approx((rows + columns) / 3, abs=1e-6)


def test_triplet_loss_over_all_negatives_skips_excluded_pairs_and_lone_anchors() -> None:
    images = torch.eye(2, 4)
    reports = torch.eye(2, 4).flip(0)  # each report matches the other image
    assert float(triplet_loss(images, reports, margin=0.2, hardest=False)) > 0
    exclude = torch.ones(2, 2, dtype=torch.bool)
    assert float(triplet_loss(images, reports, margin=0.2, exclude=exclude, hardest=False)) == 0.0
    assert float(triplet_loss(torch.randn(1, 4), torch.randn(1, 4), hardest=False)) == 0.0
