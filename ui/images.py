"""The study's images in the page: uploads read into radiographs, display windowing, heatmap overlays.

A :class:`LoadedView` keeps the raw intensities of a view, so the window/level sliders re-render
it from those (a DICOM or 16-bit image keeps its full range); the models always read the view as
loaded, with the image's own window, whatever the display shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rrg_core.data.images import Radiograph, apply_window, load_image
from rrg_core.errors import ImageLoadError
from rrg_core.explain.overlay import overlay, png_bytes
from rrg_core.store import ViewImage, content_hash
from rrg_core.study_input import MAX_VIEWS

#: Uploads over this size are refused before they are read (a chest film is rarely over 50 MB).
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


@dataclass
class LoadedView:
    """One view of the study: its name, the radiograph, and the display window (centre, width)."""

    name: str
    radiograph: Radiograph
    centre: float | None = None
    width: float | None = None

    def __post_init__(self) -> None:
        if self.centre is None or self.width is None:
            self.centre, self.width = self.radiograph.window

    @property
    def adjustable(self) -> bool:
        """Whether window/level means more than contrast stretching: DICOM or over 8 bits stored."""
        meta = self.radiograph.meta
        return meta.source_format == "dicom" or meta.bits_stored > 8

    def value_range(self) -> tuple[float, float]:
        """The smallest and largest raw value (slider bounds)."""
        values = self.radiograph.values
        return float(values.min()), float(values.max())

    def display(self) -> np.ndarray:
        """The view through the current window, uint8 (H, W)."""
        if (self.centre, self.width) == self.radiograph.window:
            return self.radiograph.display()
        pixels = apply_window(self.radiograph.values, self.centre, self.width, invert=self.radiograph.invert)
        return np.rint(pixels * np.float32(255)).astype(np.uint8)

    def set_window(self, centre: float, width: float) -> None:
        """Change the display window; a width of 0 or less, or a non-finite value, is refused."""
        centre, width = float(centre), float(width)
        if not (np.isfinite(centre) and np.isfinite(width)) or width <= 0:
            raise ImageLoadError(
                f"the window needs a finite level and a width above 0 (got {centre}, {width})"
            )
        self.centre, self.width = centre, width

    def reset_window(self) -> None:
        """Back to the image's own window (DICOM VOI or full range)."""
        self.centre, self.width = self.radiograph.window

    def describe(self) -> str:
        """One line: name, format, size, bits."""
        meta = self.radiograph.meta
        extra = f", {meta.view_position}" if meta.view_position else ""
        size = f"{meta.width}x{meta.height}, {meta.bits_stored}-bit"
        return f"{self.name}: {meta.source_format.upper()} {size}{extra}"


def read_uploads(paths: Sequence[str | os.PathLike] | None) -> list[LoadedView]:
    """Uploaded files -> views; :class:`ImageLoadError` names a file that cannot be read.

    (The pipeline adds the plausibility warnings: an odd image is drafted, with a warning.)"""
    paths = [p for p in (paths or []) if p]
    if not paths:
        raise ImageLoadError(
            "no image chosen: upload one or more views (PNG, JPEG or DICOM) or pick an example"
        )
    if len(paths) > MAX_VIEWS:
        raise ImageLoadError(f"{len(paths)} files chosen; one study has at most {MAX_VIEWS} views")
    views = []
    for path in paths:
        name = Path(path).name
        try:
            size = os.path.getsize(path)
        except OSError as error:
            raise ImageLoadError(f"{name} could not be read ({error.strerror}); upload it again") from None
        if size > MAX_UPLOAD_BYTES:
            raise ImageLoadError(
                f"{name} is {size / 2**20:.0f} MB; files over {MAX_UPLOAD_BYTES // 2**20} MB are not read. "
                "Export the image at a smaller size"
            )
        views.append(LoadedView(name, load_image(path, name=name)))
    return views


def read_stored(images: Sequence[tuple[str, bytes]]) -> list[LoadedView]:
    """Views from the store's (view name, PNG bytes) pairs."""
    return [LoadedView(name, load_image(png, name=name)) for name, png in images]


def study_hash(views: Sequence[LoadedView]) -> str:
    """The study's content hash: shape and pixels of every view, in order (no file names, no headers)."""
    parts: list[bytes] = []
    for view in views:
        pixels = np.ascontiguousarray(view.radiograph.pixels, dtype=np.float32)
        parts += [f"{pixels.shape[0]}x{pixels.shape[1]}".encode(), pixels.tobytes()]
    return content_hash(*parts)


def view_names(views: Sequence[LoadedView]) -> list[str]:
    """A short unique name per view for the store: the DICOM view position, else "view k"."""
    names = []
    for k, view in enumerate(views, start=1):
        position = (view.radiograph.meta.view_position or "").strip()
        plain = "".join(c for c in position if c.isalnum() or c in " -_")[:20]
        name = f"{plain} {k}" if plain else f"view {k}"
        names.append(name)
    return names


def store_images(views: Sequence[LoadedView]) -> list[ViewImage]:
    """The de-identified display PNG of every view (the image's own window), for the store."""
    return [
        ViewImage(name, png_bytes(view.radiograph.display()))
        for name, view in zip(view_names(views), views, strict=True)
    ]


def heat_overlay(view: LoadedView, heatmap: np.ndarray, *, normalise: bool = True) -> np.ndarray:
    """``heatmap`` (h, w) over the view as displayed now: (H, W, 3) uint8."""
    return overlay(view.display(), heatmap, normalise=normalise)
