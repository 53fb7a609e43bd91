"""UAR's TIR heatmaps for the app: per generated word, per sentence, and overlaid on each view.

:meth:`rrg_core.generators.uar.UARGenerator.explain` (or ``attention_for_report``) gives a
:class:`~rrg_core.generators.uar.UARExplanation`: each word's text-to-image attention over every
view's token grid, (T, V, h, w). Here a sentence's map is the mean of its words' maps, with
sentences split as :mod:`rrg_core.data.reports` splits a cleaned report (at the ``.`` tokens, which
belong to no sentence). Maps are normalised over all views together (the hottest cell of the study
is 1), so the view that drew more attention also looks hotter, then stretched to the image size.

View slots: UAR reads a fixed number of views; a study with fewer had its views repeated in turn,
so slot ``i`` shows study view ``i`` for every ``i`` below both counts (the overlays' length).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rrg_core.data.reports import Sentence, sentence_spans
from rrg_core.errors import RRGError
from rrg_core.explain.overlay import (
    DEFAULT_ALPHA,
    DEFAULT_CMAP,
    ArrayLike,
    as_grey,
    normalise_map,
    overlay,
    png_bytes,
    resize_map,
)
from rrg_core.generators.uar import UARExplanation


@dataclass(frozen=True)
class SentenceMap:
    """A sentence with its heatmap (V, h, w): the mean of its words' attention maps."""

    sentence: Sentence
    attention: Tensor


def _check(explanation: UARExplanation) -> Tensor:
    attention = explanation.attention
    if not isinstance(attention, Tensor) or attention.dim() != 4:
        raise RRGError("a TIR explanation needs attention shaped (words, views, h, w)")
    if attention.shape[0] != len(explanation.words):
        raise RRGError(f"{len(explanation.words)} words but {attention.shape[0]} attention maps")
    return attention.detach().float().cpu()


def _finish(maps: Tensor, size: int | tuple[int, int] | None, normalise: bool) -> Tensor:
    """(N, V, h, w) -> each row normalised over its views together, then resized to ``size``."""
    if normalise:
        maps = torch.stack([normalise_map(row) for row in maps]) if len(maps) else maps
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else size
        if len(maps):
            maps = resize_map(maps.flatten(0, 1), (height, width)).unflatten(0, maps.shape[:2])
        else:
            maps = maps.new_zeros((0, maps.shape[1], height, width))
    return maps


def token_maps(
    explanation: UARExplanation, size: int | tuple[int, int] | None = None, *, normalise: bool = True
) -> Tensor:
    """(T, V, H, W): every word's heatmap over each view (the grid (h, w) when ``size`` is None).

    ``normalise``: each word's maps scaled to [0, 1] over all views together.
    """
    return _finish(_check(explanation), size, normalise)


def sentence_maps(
    explanation: UARExplanation, size: int | tuple[int, int] | None = None, *, normalise: bool = True
) -> list[SentenceMap]:
    """Per sentence of the report, the mean of its words' maps (V, H, W); [] for an empty report."""
    attention = _check(explanation)
    spans = sentence_spans(explanation.words)
    if not spans:
        return []
    means = torch.stack([attention[s.start : s.stop].mean(dim=0) for s in spans])
    return [SentenceMap(s, m) for s, m in zip(spans, _finish(means, size, normalise), strict=True)]


def view_overlays(
    maps: ArrayLike,
    views: Sequence[ArrayLike] | Tensor,
    *,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
) -> list[np.ndarray]:
    """One (H, W, 3) uint8 overlay per view of a (V, h, w) map over a study's views.

    ``views``: the study's grey views as loaded ((V', 1, H, W) or a list of (1, H, W) / (H, W));
    the maps are normalised over all slots together, then each is drawn on its view (see the module
    docstring for the slot rule).
    """
    maps_tensor = torch.as_tensor(
        maps.detach().cpu() if isinstance(maps, Tensor) else np.asarray(maps)
    ).float()
    if maps_tensor.dim() != 3:
        raise RRGError(f"a study's heatmap must be (views, h, w), got shape {tuple(maps_tensor.shape)}")
    if len(views) == 0:
        raise RRGError("no views to draw the heatmap on")
    maps_tensor = normalise_map(maps_tensor)
    count = min(len(views), maps_tensor.shape[0])
    return [
        overlay(as_grey(views[i]), maps_tensor[i], alpha=alpha, cmap=cmap, normalise=False)
        for i in range(count)
    ]


def _index(kind: str, index: int, count: int) -> int:
    if count == 0:
        raise RRGError(f"the report has no {kind}s to explain (the model wrote an empty report)")
    if not -count <= index < count:
        raise RRGError(f"{kind} {index} does not exist: the report has {count} {kind}s")
    return index % count


def word_overlays(
    explanation: UARExplanation, views: Sequence[ArrayLike] | Tensor, index: int, **kwargs: object
) -> list[np.ndarray]:
    """The overlays (one per view) of word ``index`` of the report; ``alpha``/``cmap`` as :func:`overlay`."""
    attention = _check(explanation)
    return view_overlays(attention[_index("word", index, len(explanation.words))], views, **kwargs)  # type: ignore[arg-type]


def sentence_overlays(
    explanation: UARExplanation, views: Sequence[ArrayLike] | Tensor, index: int, **kwargs: object
) -> list[np.ndarray]:
    """The overlays (one per view) of sentence ``index`` of the report (the mean of its words' maps)."""
    sentences = sentence_maps(explanation, normalise=False)
    chosen = sentences[_index("sentence", index, len(sentences))]
    return view_overlays(chosen.attention, views, **kwargs)  # type: ignore[arg-type]


def overlays_png(overlays: Sequence[np.ndarray]) -> list[bytes]:
    """PNG bytes of each overlay (e.g. of :func:`word_overlays`)."""
    return [png_bytes(rgb) for rgb in overlays]
