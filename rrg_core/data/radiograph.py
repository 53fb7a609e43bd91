"""The radiograph every loader returns, and the checks and windowing the loaders share.

Both :mod:`rrg_core.data.images` (PNG, JPEG, the entry point) and :mod:`rrg_core.data.dicom`
build their result here, so neither has to import the other's types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rrg_core.errors import ImageLoadError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ImageMeta",
    "Radiograph",
    "apply_window",
    "check_dimensions",
    "full_range_window",
    "make_radiograph",
]


@dataclass(frozen=True)
class ImageMeta:
    """What the app keeps about an image: geometry and acquisition facts, never patient identifiers."""

    source_format: str  # "png" | "jpeg" | "dicom"
    width: int
    height: int
    bits_stored: int
    modality: str | None = None
    view_position: str | None = None
    photometric_interpretation: str | None = None
    pixel_spacing: tuple[float, float] | None = None  # mm, row then column


@dataclass(frozen=True, eq=False)  # eq=False: numpy arrays have no single truth value
class Radiograph:
    """A loaded radiograph: raw intensities, how they were windowed, and the [0, 1] result."""

    values: np.ndarray
    window: tuple[float, float]
    invert: bool
    pixels: np.ndarray
    meta: ImageMeta

    def __post_init__(self) -> None:
        # Read-only so that a Radiograph shared between the UI and the models cannot be altered.
        self.values.flags.writeable = False
        self.pixels.flags.writeable = False

    def display(self) -> np.ndarray:
        """Return the image for display: uint8 (H, W), round(pixels * 255), bright = dense."""
        return np.rint(self.pixels * np.float32(255)).astype(np.uint8)

    def tensor(self) -> torch.Tensor:
        """Return a float32 (1, H, W) tensor in [0, 1] for the models (a copy of ``pixels``)."""
        import torch  # here, so that image loading (e.g. in the UI process) does not need torch

        return torch.from_numpy(self.pixels.copy()).unsqueeze(0)


def apply_window(values: np.ndarray, centre: float, width: float, *, invert: bool = False) -> np.ndarray:
    """Map ``values`` linearly from [centre - width/2, centre + width/2] to float32 [0, 1], clipped.

    With ``invert`` the result is ``1 - window``, used for MONOCHROME1 so that bright means dense.
    ``values`` is not modified. Raises ``ValueError`` for a non-finite centre or a width <= 0.
    """
    if not (math.isfinite(centre) and math.isfinite(width)) or width <= 0:
        raise ValueError(f"window needs a finite centre and a positive width, got ({centre}, {width})")
    out = np.subtract(values, np.float32(centre - width / 2), dtype=np.float32)
    out *= np.float32(1.0 / width)
    np.clip(out, 0.0, 1.0, out=out)
    if invert:
        np.subtract(np.float32(1.0), out, out=out)
    return out


def full_range_window(values: np.ndarray) -> tuple[float, float]:
    """The (centre, width) window spanning min..max of ``values``; width 1 for a flat image."""
    lo, hi = float(values.min()), float(values.max())
    return (lo + hi) / 2, (hi - lo) if hi > lo else 1.0


def make_radiograph(
    values: np.ndarray,
    meta: ImageMeta,
    *,
    window: tuple[float, float],
    invert: bool = False,
    pixels: np.ndarray | None = None,
) -> Radiograph:
    """Build a :class:`Radiograph`; ``pixels`` defaults to ``values`` through the linear ``window``."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if pixels is None:
        pixels = apply_window(values, *window, invert=invert)
    return Radiograph(values, (float(window[0]), float(window[1])), invert, pixels, meta)


def check_dimensions(
    label: str, width: int, height: int, *, max_pixels: int, min_side: int, count: int | None = None
) -> None:
    """Refuse, from header values alone, an image over the pixel budget or under the minimum side.

    ``count`` is the number of samples decoding would produce (frames and channels included);
    it defaults to ``width * height``.
    """
    count = width * height if count is None else count
    if count > max_pixels:
        raise ImageLoadError(
            f"{label} is too large: its header declares {width}x{height} ({count:,} pixels), over the "
            f"pixel budget of {max_pixels:,} pixels; export a smaller image (downscale it)"
        )
    if min(width, height) < min_side:
        raise ImageLoadError(
            f"{label} is too small ({width}x{height} pixels); a radiograph needs at least "
            f"{min_side}x{min_side} pixels: load the full-size image, not a thumbnail"
        )
