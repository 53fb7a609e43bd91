"""rrg_core.explain without a model: heat-map overlays, UAR's TIR word and sentence maps, and the pointing
game's maths (hits, the uniform baseline, coarse grids, tolerance, finding words)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from rrg_core.data.finding_words import finding_words
from rrg_core.data.reports import split_sentences
from rrg_core.errors import RRGError
from rrg_core.explain import (
    cell_mask,
    grow_mask,
    normalise_map,
    overlay,
    overlay_png,
    play,
    pointing_hit,
    sentence_maps,
    sentence_overlays,
    sentence_spans,
    token_maps,
    uniform_hit_rate,
    word_overlays,
)
from rrg_core.generators.uar import UARExplanation

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
