"""rrg_core.explain with the tiny models: captum attributions of DCRRG's Step-1 head, the pointing game
played with them and with UAR's TIR maps on phantoms, and ``python -m train pointing-game``."""

from __future__ import annotations

import copy
import io
import json
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import DCRRG_IMAGE_SIZE
from torch import nn

from rrg_core.data.datasets import read_annotation
from rrg_core.data.finding_words import finding_words
from rrg_core.errors import RRGError
from rrg_core.explain import (
    METHODS,
    AttributionSettings,
    ObservationAttributor,
    dcrrg_pointing,
    pointing_hit,
    study_masks,
    uar_pointing,
)
from rrg_core.explain.attribution import grad_cam_layer
from rrg_core.generators import load_generator
from rrg_core.generators.dcrrg import DCRRGGenerator
from rrg_core.generators.uar import UARGenerator
from rrg_core.models.dcrrg.dcclip import DCCLIP, ProjectionHead
from rrg_core.models.image_encoders import ImageEncoder
from train import pointing_game_cmd
from train.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- captum attributions -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dcrrg_generator(tiny_dcrrg_checkpoint) -> DCRRGGenerator:
    """The shared tiny random DCRRG (64 px input: EfficientNet-Lite0 without weights, a 2x2 feature grid)."""
    return load_generator(tiny_dcrrg_checkpoint, "cpu", beam_size=1)


@pytest.fixture(scope="module")
def clip(dcrrg_generator) -> DCCLIP:
    return dcrrg_generator.model.clip


@pytest.fixture(scope="module")
def attributor(dcrrg_generator) -> ObservationAttributor:
    settings = AttributionSettings(ig_steps=4, ig_batch=4)
    return ObservationAttributor.from_generator(dcrrg_generator, settings)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_gives_a_finite_map_in_0_1_at_the_view_size(attributor, method) -> None:
    view = torch.rand(1, 80, 72, generator=torch.Generator().manual_seed(0))
    result = attributor.attribute(view, "pleural_effusion", method)
    assert result.observation == "Pleural Effusion" and result.method == method and result.target == "margin"
    assert result.heatmap.shape == (80, 72) and torch.isfinite(result.heatmap).all()
    assert float(result.heatmap.min()) >= 0 and float(result.heatmap.max()) <= 1
    assert 0 <= result.probability <= 1 and result.seconds > 0
    rgb = result.overlay(view)
    assert rgb.shape == (80, 72, 3) and rgb.dtype == np.uint8
    assert np.asarray(Image.open(io.BytesIO(result.png(view)))).shape == (80, 72, 3)


def test_probability_is_the_step1_head_and_grad_cam_hooks_the_feature_map(clip, attributor) -> None:
    view = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(1))
    result = attributor.attribute(view, "Edema", "grad-cam", target="positive")
    with torch.no_grad():
        images = ((view.expand(3, -1, -1) - 0.5) / 0.5)[None]
        expected = clip.observation_probabilities(images)[0, 3]
    assert result.probability == pytest.approx(float(expected), abs=1e-5)
    captured = []
    handle = grad_cam_layer(clip.image_encoder, "").register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        _, feature_map = clip.encode_image(images)
    handle.remove()
    assert torch.equal(captured[0], feature_map)


def test_grad_cam_reads_the_encoders_block_or_a_named_one(clip) -> None:
    encoder = clip.image_encoder
    assert encoder.cam_layer == "blocks.4" and grad_cam_layer(encoder) is encoder.body.blocks[4]
    assert grad_cam_layer(encoder, "conv_head") is encoder.body.conv_head
    with pytest.raises(RRGError, match=r"no block 'blocks\.99'.*conv_stem"):
        grad_cam_layer(encoder, "blocks.99")
    with pytest.raises(RRGError, match="no block 'nowhere'"):
        ObservationAttributor(clip, settings=AttributionSettings(gradcam_layer="nowhere"))
    view = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(2))
    size = DCRRG_IMAGE_SIZE  # 64 px
    head = ObservationAttributor(clip, image_size=size, settings=AttributionSettings(gradcam_layer="bn2"))
    assert head.attribute(view, "Edema", "gradcam").grid.shape == (2, 2)  # stride 32
    stride16 = ObservationAttributor(clip, image_size=size).attribute(view, "Edema", "gradcam")
    assert stride16.grid.shape == (4, 4) and stride16.heatmap.shape == (64, 64)


def test_concurrent_requests_give_the_sequential_results(attributor) -> None:
    views = [torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    names = ["Edema", "Cardiomegaly", "Pneumothorax", "Atelectasis"]
    sequential = [attributor.attribute(v, n, "gradcam").heatmap for v, n in zip(views, names, strict=True)]
    with ThreadPoolExecutor(2) as pool:
        parallel = list(
            pool.map(
                lambda vn: attributor.attribute(vn[0], vn[1], "gradcam").heatmap,
                zip(views, names, strict=True),
            )
        )
    for a, b in zip(sequential, parallel, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


class _Region(nn.Module):
    """Zeroes the feature map outside a fixed block of cells."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


def region_clip(clip: DCCLIP) -> DCCLIP:
    """A DCCLIP whose Step-1 margin grows with the image's features in cells (5-6, 1-2) of an 8x8 grid
    (pixels rows 20-27, columns 4-11 of a 32 px input) and ignores everything else."""
    toy = copy.deepcopy(clip)
    channels, hidden = 4, 8
    conv = nn.Conv2d(3, channels, kernel_size=4, stride=4)  # disjoint 4 px cells: no leak between cells
    cells = torch.zeros(1, 1, 8, 8)
    cells[..., 5:7, 1:3] = 1.0
    with torch.no_grad():
        conv.weight.fill_(0.01)
        conv.bias.fill_(1.0)  # features stay positive: ReLU passes them, the margin rises with them
    body = nn.Sequential(OrderedDict(conv=conv, act=nn.ReLU(), region=_Region(cells)))
    toy.image_encoder = ImageEncoder("toy", body, channels, (0.5,) * 3, (0.5,) * 3, input_size=32)
    toy.image_projection = ProjectionHead(channels, hidden, 16, 0.0)
    with torch.no_grad():
        first, last = toy.image_projection.net[0], toy.image_projection.net[3]
        first.weight.zero_()
        first.weight[:, :channels] = 1.0
        first.bias.zero_()
        last.weight.fill_(1.0 / hidden)
        last.bias.zero_()
        toy.image_classifier.weight.zero_()
        toy.image_classifier.weight[1] = 1.0
        toy.image_classifier.bias.zero_()
    return toy.eval()


@pytest.mark.parametrize("method", METHODS)
def test_a_logit_that_reads_one_region_is_attributed_to_that_region(clip, method) -> None:
    toy = ObservationAttributor(region_clip(clip), settings=AttributionSettings(ig_steps=8))
    view = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1
    heat = toy.attribute(view, "Consolidation", method).heatmap
    row, col = divmod(int(heat.argmax()), 32)
    assert 20 <= row <= 27 and 4 <= col <= 11, (method, row, col)
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[20:28, 4:12] = True
    assert pointing_hit(heat, region) == 1.0
    assert float(heat[:12].max()) < 0.05 and float(heat[:, 20:].max()) < 0.05  # far away: nothing


def test_bad_attribution_input_is_refused(attributor) -> None:
    view = torch.rand(1, 64, 64)
    with pytest.raises(RRGError, match=r"unknown observation 'effusion'.*Pleural Effusion"):
        attributor.attribute(view, "effusion")
    with pytest.raises(RRGError, match="unknown attribution method 'lime'"):
        attributor.attribute(view, "Edema", "lime")
    with pytest.raises(RRGError, match="unknown attribution target"):
        attributor.attribute(view, "Edema", target="negative")
    with pytest.raises(RRGError, match="one grey view"):
        attributor.attribute(torch.rand(3, 64, 64), "Edema")
    with pytest.raises(RRGError, match="one grey view"):
        attributor.attribute(torch.rand(1, 1, 64, 64), "Edema")
    with pytest.raises(RRGError, match=r"\[0, 1\]"):
        attributor.attribute(view * 255, "Edema")
    with pytest.raises(RRGError, match="ig_steps must be at least 1"):
        AttributionSettings(ig_steps=0)
    with pytest.raises(RRGError, match="DCRRG generator"):
        ObservationAttributor.from_generator(object())


# -- the pointing game on phantoms, and the command ----------------------------------------------


@pytest.fixture(scope="module")
def uar_generator(tiny_uar_checkpoint) -> UARGenerator:
    """The shared tiny random UAR (32 px views, a 4x4 token grid each), greedy and short."""
    generator = load_generator(tiny_uar_checkpoint, "cpu", beam_size=1)
    generator.max_length = 8
    return generator


def test_study_masks_read_the_phantom_layout(phantoms) -> None:
    record = next(r for r in read_annotation(phantoms)["train"] if (phantoms / "masks" / r.id).is_dir())
    masks = study_masks(phantoms, record.id)
    assert masks and all(view in ("frontal", "lateral") for by_view in masks.values() for view in by_view)
    for by_view in masks.values():
        for mask in by_view.values():
            assert mask.shape == (64, 64) and mask.dtype == bool
    assert study_masks(phantoms, "no-such-study") == {}


def test_dcrrg_pointing_on_phantoms(phantoms, attributor) -> None:
    assert attributor.size == (DCRRG_IMAGE_SIZE, DCRRG_IMAGE_SIZE)
    report = dcrrg_pointing(attributor, phantoms, "train", "gradcam", limit=6, progress=False)
    overall = report.overall
    assert overall.trials > 0 and 0 <= overall.rate <= 1 and 0 < overall.uniform < 1
    assert all(t.where in ("frontal", "lateral") for t in report.trials)
    data = report.to_dict()
    assert data["trials"] == overall.trials and set(data["by_finding"]) == {t.finding for t in report.trials}
    assert "| all |" in report.format_table()
    native = dcrrg_pointing(attributor, phantoms, "train", "gradcam", limit=6, native=True, progress=False)
    assert native.method == "DCRRG gradcam (native grid)" and native.overall.trials == overall.trials
    assert native.overall.uniform > overall.uniform  # a 4x4 block grid: cells touching the finding
    result = attributor.attribute(torch.rand(1, 64, 64), "Edema", "gradcam")
    assert result.grid.shape == (4, 4) and float(result.grid.max()) <= 1


def test_uar_pointing_on_phantoms(phantoms, uar_generator) -> None:
    generator = uar_generator
    reference = uar_pointing(generator, phantoms, "train", text="reference", limit=8, progress=False)
    assert reference.overall.trials > 0, reference.skipped
    for trial in reference.trials:
        word = trial.where.split("@")[0]
        assert finding_words([word]) == [(0, trial.finding)] or word in ("enlarged", "enlargement")
        assert 0 <= trial.hit <= 1 and 0 < trial.uniform < 1
    generated = uar_pointing(generator, phantoms, "train", limit=2, progress=False)
    assert generated.method == "UAR TIR (generated reports)"
    with pytest.raises(RRGError, match="generated' or 'reference"):
        uar_pointing(generator, phantoms, "train", text="edited")


def test_the_command_prints_rates_and_the_uniform_baseline(
    phantoms, tiny_dcrrg_checkpoint, tiny_uar_checkpoint, tmp_path, capsys
) -> None:
    assert pointing_game_cmd.METHODS == METHODS
    assert AttributionSettings().ig_steps == pointing_game_cmd.IG_STEPS
    out = tmp_path / "pointing.json"
    data = ["--data", str(phantoms), "--split", "train"]
    argv = ["pointing-game", "--checkpoint", str(tiny_dcrrg_checkpoint), *data]
    code = main(
        [*argv, "--limit", "3", "--method", "all", "--ig-steps", "2", "--tolerance", "2", "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert printed.count("uniform map") == 3 and "| all |" in printed
    written = json.loads(out.read_text())
    assert [r["method"] for r in written] == [f"DCRRG {m}" for m in METHODS]
    assert {r["tolerance"] for r in written} == {2} and "tolerance 2 px" in printed
    uar = ["pointing-game", "--checkpoint", str(tiny_uar_checkpoint), *data]
    assert main([*uar, "--limit", "3", "--text", "reference"]) == 0
    assert "UAR TIR (reference reports)" in capsys.readouterr().out
    assert main([*argv, "--method", "lime"]) == 2
    assert "unknown attribution method" in capsys.readouterr().err
    assert main([*argv, "--gradcam-layer", "blocks.99"]) == 2
    assert "no block 'blocks.99'" in capsys.readouterr().err
