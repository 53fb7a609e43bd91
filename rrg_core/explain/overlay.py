"""Heatmap overlays: the radiograph in grey underneath, a heatmap in a matplotlib colour map on top.

Only matplotlib's colour-map registry is used (``matplotlib.colormaps``): no pyplot, no figure and
no backend, so there is no global state and overlays can be drawn from many web-app threads at
once (each lookup returns a fresh copy of the colour map). PNGs are written with Pillow.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from torch import Tensor
from torch.nn import functional

from rrg_core.errors import RRGError

DEFAULT_CMAP = "jet"
"""The colour map of overlays: blue (cold) to red (hot), the usual look of attention figures."""

DEFAULT_ALPHA = 0.45
"""Weight of the heatmap over the image: the anatomy stays readable under the colour."""

ArrayLike = Tensor | np.ndarray


def _as_array(value: ArrayLike, what: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise RRGError(f"{what} must be a torch tensor or a numpy array, got {type(value).__name__}")


def as_grey(image: ArrayLike) -> np.ndarray:
    """A radiograph as a float32 (H, W) array in [0, 1].

    Accepts (H, W) or (1, H, W): floats in [0, 1] (as :func:`rrg_core.data.images.load_image` gives
    them), uint8 (0-255, the display array) or uint16 (0-65535).
    """
    array = _as_array(image, "the image")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or min(array.shape) < 1:
        raise RRGError(f"the image must be one grey view, (H, W) or (1, H, W); got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if not np.issubdtype(array.dtype, np.floating):
        raise RRGError(f"the image must be float in [0, 1], uint8 or uint16; got {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all() or array.min() < -1e-3 or array.max() > 1 + 1e-3:
        raise RRGError("a float image must hold finite values in [0, 1]")
    return np.clip(array, 0.0, 1.0)


def check_heatmap(heatmap: ArrayLike, dims: int = 2) -> Tensor:
    """``heatmap`` as a float32 CPU tensor with ``dims`` dimensions, every value finite."""
    tensor = torch.as_tensor(_as_array(heatmap, "the heatmap")).detach().float().cpu()
    if tensor.dim() != dims or min(tensor.shape, default=0) < 1:
        raise RRGError(
            f"a heatmap here must have {dims} non-empty dimensions, got shape {tuple(tensor.shape)}"
        )
    if not torch.isfinite(tensor).all():
        raise RRGError("the heatmap holds NaN or infinite values")
    return tensor


def normalise_map(heatmap: ArrayLike) -> Tensor:
    """Negative values to 0, then divided by the maximum: [0, 1], the hottest point 1.

    A map with no positive value becomes all zeros (nothing to show, rather than a division by 0).
    Any number of dimensions (a study's views are normalised together, so the view that drew more
    of the attention looks hotter).
    """
    tensor = torch.as_tensor(_as_array(heatmap, "the heatmap")).detach().float().cpu().clamp(min=0.0)
    peak = tensor.max() if tensor.numel() else torch.tensor(0.0)
    return tensor / peak if peak > 0 else torch.zeros_like(tensor)


def resize_map(heatmap: ArrayLike, size: int | tuple[int, int]) -> Tensor:
    """A (h, w) or (N, h, w) map stretched to ``size`` (H, W), bilinear (cell centres keep their value)."""
    tensor = torch.as_tensor(_as_array(heatmap, "the heatmap")).detach().float().cpu()
    if tensor.dim() not in (2, 3):
        raise RRGError(f"a heatmap to resize must be (h, w) or (N, h, w), got shape {tuple(tensor.shape)}")
    height, width = (size, size) if isinstance(size, int) else size
    if tuple(tensor.shape[-2:]) == (height, width):
        return tensor.clone()
    batch = tensor.reshape(-1, 1, *tensor.shape[-2:])
    out = functional.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False)
    return out.reshape(*tensor.shape[:-2], height, width)


def _colour_map(name: str):
    try:
        return colormaps[name]  # a copy: safe to use from several threads
    except KeyError:
        raise RRGError(
            f"unknown colour map {name!r}; try one of: jet, turbo, inferno, viridis, magma"
        ) from None


def overlay(
    image: ArrayLike,
    heatmap: ArrayLike,
    *,
    alpha: float = DEFAULT_ALPHA,
    cmap: str = DEFAULT_CMAP,
    normalise: bool = True,
) -> np.ndarray:
    """The image in grey with ``heatmap`` coloured on top: an (H, W, 3) uint8 RGB array.

    ``heatmap`` (h, w) is stretched to the image's (H, W) (bilinear). ``normalise`` scales it with
    :func:`normalise_map`; without it the values must already lie in [0, 1]. Each pixel is
    ``(1 - alpha) * grey + alpha * colour``, so ``alpha`` 0 gives the image back unchanged.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise RRGError(f"alpha must be between 0 and 1, got {alpha}")
    grey = as_grey(image)
    heat = resize_map(check_heatmap(heatmap), grey.shape)
    if normalise:
        heat = normalise_map(heat)
    elif heat.min() < -1e-6 or heat.max() > 1 + 1e-6:
        raise RRGError("an unnormalised heatmap must hold values in [0, 1]; pass normalise=True")
    colours = _colour_map(cmap)(heat.clamp(0.0, 1.0).numpy())[..., :3].astype(np.float32)
    blended = (1.0 - alpha) * grey[..., None] + alpha * colours
    return np.rint(np.clip(blended, 0.0, 1.0) * 255.0).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 array (or (H, W) grey) as PNG file bytes."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
        raise RRGError("PNG encoding needs an (H, W, 3) or (H, W) uint8 array")
    if rgb.ndim == 3 and rgb.shape[2] != 3:
        raise RRGError(f"PNG encoding needs 3 colour channels, got {rgb.shape[2]}")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_png(image: ArrayLike, heatmap: ArrayLike, **kwargs: object) -> bytes:
    """:func:`overlay` as PNG bytes (same keyword arguments)."""
    return png_bytes(overlay(image, heatmap, **kwargs))  # type: ignore[arg-type]
