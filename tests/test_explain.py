"""rrg_core.explain: overlays, TIR word/sentence maps, captum attributions of DCRRG's Step-1 head,
the pointing game's maths and its phantom runner, and ``python -m train pointing-game``."""

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

from rrg_core.checkpoints import load_checkpoint
from rrg_core.data.datasets import read_annotation
from rrg_core.data.reports import split_sentences
from rrg_core.errors import RRGError
from rrg_core.explain import (
    METHODS,
    AttributionSettings,
    ObservationAttributor,
    cell_mask,
    dcrrg_pointing,
    finding_words,
    grow_mask,
    normalise_map,
    overlay,
    overlay_png,
    play,
    pointing_hit,
    sentence_maps,
    sentence_overlays,
    sentence_spans,
    study_masks,
    token_maps,
    uar_pointing,
    uniform_hit_rate,
    word_overlays,
)
from rrg_core.explain.attribution import grad_cam_layer
from rrg_core.generators import DCRRGGenerator, dcrrg_generator_from_checkpoint
from rrg_core.models.dcclip import DCCLIP, ProjectionHead
from rrg_core.models.image_encoders import ImageEncoder
from rrg_core.uar_generator import UARExplanation, UARGenerator, uar_generator_from_checkpoint
from train import pointing_game_cmd
from train.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- overlays ------------------------------------------------------------------------------------


def test_overlay_is_rgb_uint8_and_its_png_decodes() -> None:
    image = torch.rand(1, 40, 30)
    heat = torch.rand(5, 4)  # a coarse grid: stretched to the image
    rgb = overlay(image, heat, alpha=0.5, cmap="inferno")
    assert rgb.shape == (40, 30, 3) and rgb.dtype == np.uint8
    decoded = np.asarray(Image.open(io.BytesIO(overlay_png(image, heat, alpha=0.5, cmap="inferno"))))
    assert decoded.shape == (40, 30, 3) and np.array_equal(decoded, rgb)


def test_alpha_zero_gives_the_image_back() -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    rgb = overlay(grey, np.random.default_rng(0).random((8, 8)), alpha=0.0)
    assert np.array_equal(rgb, np.repeat(grey[..., None], 3, axis=2))
    floats = torch.rand(1, 8, 8)
    rgb = overlay(floats, torch.rand(2, 2), alpha=0.0)
    expected = np.rint(floats[0].numpy() * 255).astype(np.uint8)
    assert np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)


def test_alpha_one_is_the_colour_map_and_hot_differs_from_cold() -> None:
    heat = np.zeros((6, 6))
    heat[1, 1] = 1.0
    rgb = overlay(np.zeros((6, 6), np.float32), heat, alpha=1.0, cmap="jet")
    assert tuple(rgb[1, 1]) != tuple(rgb[4, 4])
    assert rgb[1, 1, 0] > rgb[1, 1, 2] and rgb[4, 4, 2] > rgb[4, 4, 0]  # jet: red hot, blue cold


def test_normalise_map() -> None:
    out = normalise_map(torch.tensor([[-1.0, 0.5], [2.0, 1.0]]))
    assert torch.allclose(out, torch.tensor([[0.0, 0.25], [1.0, 0.5]]))
    assert not normalise_map(-torch.ones(3, 3)).any()


@pytest.mark.parametrize(
    ("image", "heat", "kwargs", "message"),
    [
        (np.zeros((2, 8, 8), np.float32), np.ones((8, 8)), {}, "one grey view"),
        (np.full((8, 8), 2.0, np.float32), np.ones((8, 8)), {}, r"\[0, 1\]"),
        (np.zeros((8, 8), np.float32), np.ones((2, 8, 8)), {}, "2 non-empty dimensions"),
        (np.zeros((8, 8), np.float32), np.full((8, 8), np.nan), {}, "NaN"),
        (np.zeros((8, 8), np.float32), np.ones((8, 8)), {"alpha": 1.5}, "alpha"),
        (np.zeros((8, 8), np.float32), np.ones((8, 8)), {"cmap": "no-such-map"}, "colour map"),
        (np.zeros((8, 8), np.float32), np.full((8, 8), 3.0), {"normalise": False}, "normalise=True"),
        ([[0.0]], np.ones((8, 8)), {}, "numpy array"),
    ],
)
def test_bad_overlay_input_is_refused(image, heat, kwargs, message) -> None:
    with pytest.raises(RRGError, match=message):
        overlay(image, heat, **kwargs)


# -- TIR maps ------------------------------------------------------------------------------------

WORDS = ["heart", "is", "enlarged", ".", "small", "left", "effusion", "."]


def explanation(words: list[str] = WORDS, views: int = 2, grid: int = 4) -> UARExplanation:
    generator = torch.Generator().manual_seed(len(words))
    attention = torch.rand(len(words), views, grid, grid, generator=generator)
    attention = attention / attention.sum(dim=(1, 2, 3), keepdim=True)
    return UARExplanation(" ".join(words), list(words), attention)


def test_sentences_split_like_the_report_cleaner() -> None:
    spans = sentence_spans(WORDS)
    assert (
        [s.text for s in spans]
        == split_sentences(" ".join(WORDS))
        == ["heart is enlarged", "small left effusion"]
    )
    assert [(s.start, s.stop) for s in spans] == [(0, 3), (4, 7)]
    assert [s.text for s in sentence_spans([".", "no", "effusion", ".", ".", "clear"])] == [
        "no effusion",
        "clear",
    ]
    assert sentence_spans([]) == []


def test_sentence_map_is_the_mean_of_its_words() -> None:
    ex = explanation()
    raw = sentence_maps(ex, normalise=False)
    assert [m.sentence.text for m in raw] == ["heart is enlarged", "small left effusion"]
    assert torch.allclose(raw[1].attention, ex.attention[4:7].mean(dim=0))
    scaled = sentence_maps(ex, size=(16, 12))
    assert scaled[0].attention.shape == (2, 16, 12)
    assert abs(float(scaled[0].attention.max()) - 1.0) < 1e-6 and float(scaled[0].attention.min()) >= 0


def test_token_maps_are_normalised_over_all_views_together() -> None:
    ex = explanation()
    maps = token_maps(ex)
    assert maps.shape == (len(WORDS), 2, 4, 4)
    for word in range(len(WORDS)):
        assert torch.allclose(maps[word], ex.attention[word] / ex.attention[word].max())
    assert token_maps(ex, 32).shape == (len(WORDS), 2, 32, 32)


def test_word_and_sentence_overlays_draw_one_per_view() -> None:
    ex = explanation()
    views = torch.rand(2, 1, 24, 24)
    overlays = word_overlays(ex, views, 6)
    assert len(overlays) == 2 and all(o.shape == (24, 24, 3) and o.dtype == np.uint8 for o in overlays)
    assert len(sentence_overlays(ex, views, -1)) == 2
    assert len(word_overlays(ex, views[:1], 0)) == 1  # a single-view study: its one view (slot 0)


def test_empty_or_wrong_explanations_are_refused() -> None:
    empty = UARExplanation("", [], torch.zeros(0, 2, 4, 4))
    assert sentence_maps(empty) == [] and token_maps(empty, 8).shape == (0, 2, 8, 8)
    views = torch.rand(2, 1, 16, 16)
    with pytest.raises(RRGError, match="no words"):
        word_overlays(empty, views, 0)
    with pytest.raises(RRGError, match="no sentences"):
        sentence_overlays(empty, views, 0)
    with pytest.raises(RRGError, match="word 8 does not exist"):
        word_overlays(explanation(), views, 8)
    with pytest.raises(RRGError, match="3 words but 2"):
        token_maps(UARExplanation("a b c", ["a", "b", "c"], torch.rand(2, 2, 4, 4)))
    with pytest.raises(RRGError, match="no views"):
        word_overlays(explanation(), [], 0)


# -- pointing game maths -------------------------------------------------------------------------


def test_hottest_point_inside_or_outside_the_mask() -> None:
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:5] = True
    heat = np.zeros((8, 8))
    heat[3, 4] = 1.0
    assert pointing_hit(heat, mask) == 1.0
    heat[7, 7] = 2.0
    assert pointing_hit(heat, mask) == 0.0
    assert uniform_hit_rate(heat.shape, mask) == 6 / 64


def test_ties_count_as_a_random_choice_and_a_flat_map_scores_the_baseline() -> None:
    mask = np.zeros((4, 4), bool)
    mask[0, :3] = True
    heat = np.zeros((4, 4))
    heat[0, 0] = heat[3, 3] = 1.0
    assert pointing_hit(heat, mask) == 0.5
    assert pointing_hit(np.ones((4, 4)), mask) == uniform_hit_rate((4, 4), mask) == 3 / 16


def test_uniform_baseline_is_exact() -> None:
    """The baseline equals the mean hit over every possible hottest point (enumerated, not sampled)."""
    rng = np.random.default_rng(0)
    mask = rng.random((2, 12, 12)) < 0.2
    for grid in ((12, 12), (4, 4), (5, 3)):
        shape = (2, *grid)
        hits = []
        for point in range(int(np.prod(shape))):
            one_hot = torch.zeros(int(np.prod(shape)))
            one_hot[point] = 1.0
            hits.append(pointing_hit(one_hot.view(shape), mask))
        assert uniform_hit_rate(shape, mask) == pytest.approx(np.mean(hits), abs=1e-12)


def test_coarse_maps_play_on_their_own_grid() -> None:
    mask = np.zeros((8, 8), bool)
    mask[5, 6] = True  # one pixel: cell (2, 3) of a 4x4 grid
    assert cell_mask(mask, (4, 4)).nonzero().tolist() == [[2, 3]]
    heat = torch.zeros(4, 4)
    heat[2, 3] = 1.0
    assert pointing_hit(heat, mask) == 1.0 and uniform_hit_rate((4, 4), mask) == 1 / 16
    odd = cell_mask(np.eye(7, dtype=bool), (3, 3))  # uneven cells overlap, as adaptive pooling cuts them
    assert odd.diagonal().all()
    two_views = np.zeros((2, 8, 8), bool)
    two_views[1, :4, :4] = True
    views_heat = torch.zeros(2, 2, 2)
    views_heat[1, 0, 0] = 1.0
    trial = play("s", "Edema", "edema@3", views_heat, two_views)
    assert trial.hit == 1.0 and trial.uniform == 1 / 8


def test_tolerance_grows_the_mask_by_a_disc() -> None:
    mask = np.zeros((9, 9), bool)
    mask[4, 4] = True
    assert int(grow_mask(mask, 1).sum()) == 5 and int(grow_mask(mask, 2).sum()) == 13
    assert torch.equal(grow_mask(mask, 0), torch.from_numpy(mask))
    heat = np.zeros((9, 9))
    heat[4, 6] = 1.0  # two pixels right of the finding
    assert pointing_hit(heat, mask) == 0.0 and pointing_hit(heat, mask, tolerance=1) == 0.0
    assert pointing_hit(heat, mask, tolerance=2) == 1.0
    assert uniform_hit_rate((9, 9), mask, tolerance=2) == 13 / 81
    trial = play("s", "Fracture", "frontal", heat, mask, tolerance=2)
    assert (trial.hit, trial.uniform) == (1.0, 13 / 81)
    with pytest.raises(RRGError, match="tolerance"):
        pointing_hit(heat, mask, tolerance=-1)


@pytest.mark.parametrize(
    ("heat", "mask", "message"),
    [
        (np.ones((4, 4)), np.zeros((4, 4), bool), "mask is empty"),
        (np.ones((4, 4)), np.ones((4, 4)), "boolean"),
        (np.ones((2, 4, 4)), np.ones((4, 4), bool), "same leading dimensions"),
        (np.ones((8, 8)), np.ones((4, 4), bool), "does not fit"),
        (np.full((4, 4), np.inf), np.ones((4, 4), bool), "finite values"),
    ],
)
def test_bad_pointing_input_is_refused(heat, mask, message) -> None:
    with pytest.raises(RRGError, match=message):
        pointing_hit(heat, mask)


def split_words(text: str) -> list[str]:
    return text.split(" ")


def test_finding_words() -> None:
    words = split_words("the heart is enlarged . small left pleural effusion . no pneumothorax .")
    assert finding_words(words) == [(3, "Cardiomegaly"), (8, "Pleural Effusion"), (11, "Pneumothorax")]
    words = split_words("the mediastinum is enlarged . right upper lobe nodule .")
    assert finding_words(words) == [(3, "Enlarged Cardiomediastinum"), (8, "Lung Lesion")]
    assert finding_words([]) == [] and finding_words(["enlarged"]) == []


# -- captum attributions -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dcrrg_generator(tiny_dcrrg_checkpoint) -> DCRRGGenerator:
    """The shared tiny random DCRRG (64 px input: EfficientNet-Lite0 without weights, a 2x2 feature grid)."""
    return dcrrg_generator_from_checkpoint(load_checkpoint(tiny_dcrrg_checkpoint), "cpu", beam_size=1)


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
    handle = grad_cam_layer(clip.image_encoder).register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        _, feature_map = clip.encode_image(images)
    handle.remove()
    assert torch.equal(captured[0], feature_map)


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
    generator = uar_generator_from_checkpoint(load_checkpoint(tiny_uar_checkpoint), "cpu", beam_size=1)
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
    assert native.overall.uniform > overall.uniform  # a 2x2 feature grid: cells touching the finding
    result = attributor.attribute(torch.rand(1, 64, 64), "Edema", "gradcam")
    assert result.grid.shape == (2, 2) and float(result.grid.max()) <= 1


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
