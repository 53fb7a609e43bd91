"""dVAE tokenizer (UAR's LSU): shapes, losses, Gumbel relaxation, tokens, perplexity, temperature."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rrg_core.errors import RRGError
from rrg_core.models.uar.dvae import (
    DVAE,
    DVAEConfig,
    code_perplexity,
    gumbel_temperature,
)
from rrg_core.models.uar.losses import kl_to_uniform

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(in_channels: int = 3, **overrides) -> DVAE:
    torch.manual_seed(0)
    config = DVAEConfig(
        in_channels=in_channels, image_size=32, downsample=8, codebook_size=16, embed_dim=8, hidden=8,
        **overrides,
    )  # fmt: skip
    return DVAE(config)


@pytest.mark.parametrize("channels", [1, 3])
def test_forward_shapes_and_finite_losses(channels: int) -> None:
    model = tiny(channels).train()
    images = torch.randn(2, channels, 32, 32)
    out = model(images, temperature=0.9)
    assert out.reconstruction.shape == images.shape
    assert out.logits.shape == (2, 16, 4, 4)
    for value in (out.losses.reconstruction, out.losses.kl, out.losses.total):
        assert value.dim() == 0 and torch.isfinite(value)
    expected = out.losses.reconstruction + model.config.kl_weight * out.losses.kl
    assert torch.allclose(out.losses.total, expected)


def test_default_config_gives_a_14_by_14_grid() -> None:
    config = DVAEConfig()
    assert (config.image_size, config.downsample, config.grid_size, config.n_stages) == (112, 8, 14, 3)
    ids = DVAE(DVAEConfig(hidden=4, codebook_size=32, embed_dim=4)).tokens(torch.randn(1, 3, 112, 112))
    assert ids.shape == (1, 14, 14)


def test_tokens_of_views_and_range() -> None:
    model = tiny()
    images = torch.randn(2, 2, 3, 32, 32)  # (B, V, C, H, W)
    ids = model.tokens(images)
    assert ids.shape == (2, 2, 4, 4) and ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < 16
    assert torch.equal(ids[1, 0], model.tokens(images[1, 0:1])[0])


def test_eval_reconstruction_is_deterministic_and_equals_decoding_the_tokens() -> None:
    model = tiny().eval()
    images = torch.randn(2, 3, 32, 32)
    first, second = model(images).reconstruction, model(images).reconstruction
    assert torch.equal(first, second)
    assert torch.allclose(first, model.decode_tokens(model.tokens(images)), atol=1e-5)


def test_training_samples_differ_and_hard_codes_are_one_hot() -> None:
    model = tiny().train()
    images = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    a = model(images, temperature=1.0).reconstruction
    b = model(images, temperature=1.0).reconstruction
    assert not torch.allclose(a, b)  # Gumbel noise
    logits = model.encoder(images)
    codes = torch.nn.functional.gumbel_softmax(logits, tau=0.5, hard=True, dim=1)
    assert torch.equal(codes.sum(dim=1), torch.ones(2, 4, 4))


def test_kl_to_uniform_bounds() -> None:
    uniform = torch.zeros(1, 16, 2, 2)
    assert float(kl_to_uniform(uniform)) == pytest.approx(0.0, abs=1e-6)
    peaked = torch.full((1, 16, 2, 2), -1e4)
    peaked[:, 3] = 1e4
    assert float(kl_to_uniform(peaked)) == pytest.approx(math.log(16), abs=1e-4)


def test_losses_decrease_over_a_few_steps() -> None:
    model = tiny(kl_weight=0.001).train()
    g = torch.Generator().manual_seed(0)
    # Piecewise-constant 8x8 cells of +-1: a 4x4 grid of codes can carry such images exactly.
    cells = torch.randint(0, 2, (4, 1, 4, 4), generator=g).float() * 2 - 1
    images = cells.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3).expand(-1, 3, -1, -1)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    totals = []
    for step in range(25):
        torch.manual_seed(step)
        loss = model(images, temperature=gumbel_temperature(step, 25)).losses.total
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        totals.append(loss.item())
    assert all(math.isfinite(t) for t in totals)
    assert sum(totals[-5:]) / 5 < 0.7 * sum(totals[:5]) / 5


def test_code_perplexity() -> None:
    assert code_perplexity(torch.zeros(10, dtype=torch.long), 8) == pytest.approx(1.0)
    assert code_perplexity(torch.arange(8).repeat(3), 8) == pytest.approx(8.0)
    assert code_perplexity(torch.tensor([0, 0, 1, 1]), 8) == pytest.approx(2.0)
    assert tiny().perplexity(torch.tensor([[1, 2], [3, 4]])) == pytest.approx(4.0)
    with pytest.raises(RRGError, match="code ids"):
        code_perplexity(torch.tensor([8]), 8)


def test_temperature_schedule() -> None:
    assert gumbel_temperature(0, 100) == pytest.approx(1.0)
    assert gumbel_temperature(100, 100) == pytest.approx(1 / 16)
    assert gumbel_temperature(500, 100) == pytest.approx(1 / 16)
    assert gumbel_temperature(50, 100, start=1.0, end=0.25) == pytest.approx(0.5)  # geometric
    values = [gumbel_temperature(s, 10) for s in range(11)]
    assert all(a > b for a, b in itertools.pairwise(values))
    with pytest.raises(ValueError, match="positive"):
        gumbel_temperature(0, 10, end=0.0)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((2, 1, 32, 32), "expects images"), ((2, 3, 30, 32), "not divisible"), ((3, 32, 32), "expects images")],
)
def test_bad_images_are_refused(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(RRGError, match=message):
        tiny()(torch.randn(*shape))


def test_bad_configs_are_refused() -> None:
    with pytest.raises(RRGError, match="power of two"):
        DVAEConfig(downsample=6)
    with pytest.raises(RRGError, match="divisible"):
        DVAEConfig(image_size=100)
    with pytest.raises(RRGError, match="in_channels"):
        DVAEConfig(in_channels=2)
    with pytest.raises(ValueError, match="temperature"):
        tiny()(torch.randn(1, 3, 32, 32), temperature=0.0)
