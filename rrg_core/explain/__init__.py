"""Explanations for the review page: TIR heatmaps, captum attributions, overlays, the pointing game.

Modules, one job each:

- :mod:`.overlay`: a heatmap over a grey radiograph with a matplotlib colour map, as an RGB array
  or PNG bytes (no pyplot: thread-safe);
- :mod:`.tir`: UAR's text-to-image attention per word and per sentence, and their overlays;
- :mod:`.attribution`: Integrated Gradients, Grad-CAM and Occlusion of DCRRG's Step-1 head for
  any of the 14 observations, on demand for one view;
- :mod:`.pointing`: the pointing game's maths (hit, exact uniform baseline, scores);
- :mod:`.phantom_pointing`: the pointing game over a phantom split's finding masks.

The heavy modules (captum, the phantom reader) load only when their names are first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from rrg_core.explain.overlay import (
    DEFAULT_ALPHA,
    DEFAULT_CMAP,
    as_grey,
    normalise_map,
    overlay,
    overlay_png,
    png_bytes,
    resize_map,
)
from rrg_core.explain.pointing import (
    PointingReport,
    PointingScore,
    PointingTrial,
    cell_mask,
    grow_mask,
    play,
    pointing_hit,
    score,
    uniform_hit_rate,
)

_LAZY = {
    "Sentence": "tir",
    "SentenceMap": "tir",
    "sentence_spans": "tir",
    "token_maps": "tir",
    "sentence_maps": "tir",
    "view_overlays": "tir",
    "word_overlays": "tir",
    "sentence_overlays": "tir",
    "overlays_png": "tir",
    "METHODS": "attribution",
    "Attribution": "attribution",
    "AttributionSettings": "attribution",
    "ObservationAttributor": "attribution",
    "method_name": "attribution",
    "study_masks": "phantom_pointing",
    "dcrrg_pointing": "phantom_pointing",
    "uar_pointing": "phantom_pointing",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"rrg_core.explain.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'rrg_core.explain' has no attribute {name!r}")


__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CMAP",
    "PointingReport",
    "PointingScore",
    "PointingTrial",
    "as_grey",
    "cell_mask",
    "grow_mask",
    "normalise_map",
    "overlay",
    "overlay_png",
    "play",
    "png_bytes",
    "pointing_hit",
    "resize_map",
    "score",
    "uniform_hit_rate",
    *_LAZY,
]
