"""A study's views as the pipeline takes them: paths, bytes or arrays -> grey tensors plus warnings.

The loader (:func:`rrg_core.data.images.load_image`) refuses what is not an image; this module adds
what it cannot know from one file: whether the picture is plausibly a chest radiograph. Those checks
warn rather than refuse: a radiologist may have a reason to look at an odd image, but must be told
that the drafts for it mean little.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rrg_core.data.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    ImageLoadError,
    ImageMeta,
    Radiograph,
    check_dimensions,
    full_range_window,
    load_image,
    make_radiograph,
)

#: What :func:`load_study` takes for one view.
ViewSource = str | os.PathLike | bytes | np.ndarray | Radiograph
#: At most this many views per study: IU X-ray has two, MIMIC-CXR up to four.
MAX_VIEWS = 8
#: DICOM modalities of projection radiography; others (CT, MR, US, ...) are not chest X-rays.
RADIOGRAPHY_MODALITIES = frozenset({"CR", "DX", "RG", "DR", "PX"})
#: Below this standard deviation of the [0, 1] pixels the image is nearly one flat grey.
MIN_CONTRAST = 0.02
#: A chest film is roughly square; beyond this ratio of the sides it is probably something else.
MAX_ASPECT = 2.5


@dataclass
class LoadedStudy:
    """The grey views (each (1, H, W) in [0, 1]), the display images, per-view facts and warnings."""

    views: list[torch.Tensor]
    display: list[np.ndarray]
    meta: list[dict[str, Any]]
    warnings: list[str]


def load_study(sources: Sequence[ViewSource]) -> LoadedStudy:
    """Load one study's views; raises :class:`ImageLoadError` naming the view that cannot be read."""
    if isinstance(sources, str | bytes | os.PathLike | np.ndarray | Radiograph):
        sources = [sources]
    sources = list(sources)
    if not sources:
        raise ImageLoadError("no image given: choose at least one view (PNG, JPEG or DICOM)")
    if len(sources) > MAX_VIEWS:
        raise ImageLoadError(f"{len(sources)} images for one study; at most {MAX_VIEWS} views are read")
    radiographs = [_radiograph(source, k) for k, source in enumerate(sources, start=1)]
    warnings = [
        w for k, r in enumerate(radiographs, start=1) for w in plausibility_warnings(r, _name(k, sources))
    ]
    return LoadedStudy(
        views=[r.tensor() for r in radiographs],
        display=[r.display() for r in radiographs],
        meta=[_meta(r) for r in radiographs],
        warnings=warnings,
    )


def plausibility_warnings(radiograph: Radiograph, name: str) -> list[str]:
    """Reasons to doubt that ``radiograph`` is a chest X-ray (empty when none)."""
    meta, pixels = radiograph.meta, radiograph.pixels
    warnings = []
    if meta.modality and meta.modality.upper() not in RADIOGRAPHY_MODALITIES:
        warnings.append(
            f"{name} is a DICOM of modality {meta.modality}, not a radiograph (CR/DX): "
            "the models were trained on chest X-rays only"
        )
    if float(pixels.std()) < MIN_CONTRAST:
        warnings.append(f"{name} is almost uniformly grey (no visible structure): the drafts mean little")
    ratio = max(meta.width, meta.height) / max(1, min(meta.width, meta.height))
    if ratio > MAX_ASPECT:
        warnings.append(
            f"{name} is {meta.width}x{meta.height} pixels, far from a chest film's shape: is it a radiograph?"
        )
    return warnings


def _radiograph(source: ViewSource, k: int) -> Radiograph:
    if isinstance(source, Radiograph):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, f"view {k}")
    if isinstance(source, bytes):
        return load_image(source, name=f"view {k}")
    return load_image(source)


def _from_array(array: np.ndarray, name: str) -> Radiograph:
    """A grey (H, W) array of any real dtype, windowed over its full range."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ImageLoadError(
            f"{name}: an array view must be a grey (H, W) image, got {array.dtype} {array.shape}"
        )
    height, width = array.shape
    check_dimensions(name, width, height, max_pixels=DEFAULT_MAX_PIXELS, min_side=DEFAULT_MIN_SIDE)
    values = array.astype(np.float32)
    if not np.isfinite(values).all():
        raise ImageLoadError(f"{name}: the array has NaN or infinite values")
    bits = 8 if array.dtype == np.uint8 else 16
    meta = ImageMeta(source_format="array", width=width, height=height, bits_stored=bits)
    return make_radiograph(values, meta, window=full_range_window(values))


def _name(k: int, sources: Sequence[ViewSource]) -> str:
    source = sources[k - 1]
    return os.fspath(source) if isinstance(source, str | os.PathLike) else f"view {k}"


def _meta(radiograph: Radiograph) -> dict[str, Any]:
    meta = radiograph.meta
    return {
        "format": meta.source_format,
        "width": meta.width,
        "height": meta.height,
        "view_position": meta.view_position,
        "modality": meta.modality,
    }
