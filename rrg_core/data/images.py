"""Load a chest radiograph from PNG, JPEG or DICOM into arrays for the models and the display.

:func:`load_image` is the only entry point for user-supplied images. It detects the format from
the content, checks the size from the header before any pixel is decoded (decompression bombs),
and turns every failure into an :class:`~rrg_core.errors.ImageLoadError` whose message names the
file and says what to do. The DICOM half lives in :mod:`rrg_core.data.dicom`; the
:class:`Radiograph` both halves return, with the checks and windowing they share, in
:mod:`rrg_core.data.radiograph` (its names are importable from here too).
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rrg_core.data.dicom import read_dicom
from rrg_core.data.radiograph import (
    ImageMeta,
    Radiograph,
    apply_window,
    check_dimensions,
    full_range_window,
    make_radiograph,
)
from rrg_core.errors import ImageLoadError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIDE",
    "ImageMeta",
    "ImageSource",
    "Radiograph",
    "apply_window",
    "load_image",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS: int = 40_000_000
DEFAULT_MIN_SIDE: int = 64

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
_HEAD_BYTES = 132  # enough for the DICOM preamble (128 bytes) and the 'DICM' prefix
_KINDS = "a PNG, JPEG or DICOM radiograph"
_GREY_16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# ITU-R BT.601 luma, the weights Pillow's convert("L") uses, so colour and grey exports agree.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# What Pillow raises for damaged or truncated data, beyond UnidentifiedImageError (an OSError).
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, MemoryError)


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    name: str | None = None,
) -> Radiograph:
    """Load a radiograph from a path, bytes or a binary file object.

    The format is detected from the content (PNG signature, JPEG SOI marker, 'DICM' at offset 128,
    or a DICOM without preamble), never from the file extension. ``name`` is used in error messages
    (default: the path, or "The uploaded image"). Raises :class:`ImageLoadError` for anything that
    is not a loadable greyscale radiograph within ``max_pixels`` and at least ``min_side`` a side.
    """
    if max_pixels < 1 or min_side < 1:
        raise ValueError(f"max_pixels and min_side must be positive, got {max_pixels}, {min_side}")
    limits = {"max_pixels": max_pixels, "min_side": min_side}
    with _open_source(source, name) as (fp, label):
        head = fp.read(_HEAD_BYTES)
        fp.seek(0)
        if not head:
            raise ImageLoadError(f"{label} is empty (0 bytes); choose {_KINDS}")
        kind = _sniff(head)
        if kind in ("png", "jpeg"):
            radiograph = _load_pil(fp, label, kind, **limits)
        elif kind in ("dicom", "dicom-raw"):
            radiograph = read_dicom(fp, label, force=kind == "dicom-raw", **limits)
        else:
            raise ImageLoadError(
                f"{label} is not an image this app can read: its content is not {_KINDS} "
                "(the file extension is ignored; only the content counts)"
            )
    log.debug("loaded %s: %s %dx%d", label, radiograph.meta.source_format, *radiograph.values.shape[::-1])
    return radiograph


@contextmanager
def _open_source(source: ImageSource, name: str | None) -> Iterator[tuple[BinaryIO, str]]:
    """Yield a seekable binary stream over ``source`` and the label that error messages use."""
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(source), _label(name, None)
    elif isinstance(source, str | os.PathLike):
        label = _label(name, os.fspath(source))
        try:
            fp = open(source, "rb")  # noqa: SIM115 - closed by the with below, after the yield
        except OSError as exc:
            raise ImageLoadError(f"{label} cannot be opened ({exc.strerror or exc}); check the path") from exc
        with fp:
            yield fp, label
    else:
        # A file object may not be seekable (an upload stream), and it is an upload that is in
        # memory already: read it whole.
        stream_name = getattr(source, "name", None)
        label = _label(name, stream_name if isinstance(stream_name, str) else None)
        try:
            data = source.read()
        except OSError as exc:
            raise ImageLoadError(f"{label} cannot be read ({exc})") from exc
        if not isinstance(data, bytes):
            raise ImageLoadError(f"{label} was opened in text mode; open it in binary mode ('rb')")
        yield io.BytesIO(data), label


def _label(name: str | None, fallback: str | None) -> str:
    shown = name if name is not None else fallback
    return f"'{shown}'" if shown else "The uploaded image"


def _sniff(head: bytes) -> str | None:
    """Return "png", "jpeg", "dicom", "dicom-raw" (no preamble) or None, from the first bytes."""
    # DICM first: a DICOM preamble may hold anything (dual-format files exist), 'DICM' decides.
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(_JPEG_SOI):
        return "jpeg"
    # A DICOM stream without preamble starts with a tag of group 0002 (file meta) or 0008
    # (identification), little or big endian. Anything else is not handed to pydicom's force
    # mode, which would parse random bytes into a garbage dataset.
    if len(head) >= 8 and (
        int.from_bytes(head[:2], "little") in (0x0002, 0x0008) or int.from_bytes(head[:2], "big") == 0x0008
    ):
        return "dicom-raw"
    return None


def _load_pil(fp: BinaryIO, label: str, kind: str, *, max_pixels: int, min_side: int) -> Radiograph:
    fmt = kind.upper()
    try:
        # Lazy: only the header is parsed here, so the size is checked before any decoding.
        img = Image.open(fp, formats=[fmt])
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires first for absurd sizes (far above any sensible budget).
        raise ImageLoadError(
            f"{label} is too large to load safely ({exc}); the pixel budget is {max_pixels:,} pixels: "
            "export a smaller image"
        ) from exc
    except (UnidentifiedImageError, *_PIL_ERRORS) as exc:
        raise ImageLoadError(
            f"{label} starts like a {fmt} file but its header is damaged; export it again"
        ) from exc
    with img:
        check_dimensions(label, img.width, img.height, max_pixels=max_pixels, min_side=min_side)
        try:
            values, bits = _grey_values(_upright(img) if kind == "jpeg" else img)
        except _PIL_ERRORS as exc:
            raise ImageLoadError(
                f"{label} is a truncated or damaged {fmt} file ({exc}); export or download it again"
            ) from exc
        if values is None:
            raise ImageLoadError(
                f"{label} has an unsupported {fmt} pixel mode ({img.mode}); save it as greyscale"
            )
    window = (127.5, 255.0) if bits == 8 else full_range_window(values)
    meta = ImageMeta(kind, values.shape[1], values.shape[0], bits)
    return make_radiograph(values, meta, window=window)


def _upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation of a JPEG (phones and some exporters rotate by tag, not pixels)."""
    if img.getexif().get(0x0112, 1) in (1, None):  # 0x0112: EXIF Orientation; 1 = upright
        return img
    return ImageOps.exif_transpose(img)


def _grey_values(img: Image.Image) -> tuple[np.ndarray | None, int]:
    """Decode ``img`` to float32 grey values (H, W) and its bit depth; (None, 0) for unknown modes."""
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.float32), 8
    if mode in _GREY_16_MODES:
        return np.asarray(img).astype(np.float32), 16
    if mode == "I":  # 32-bit integer grey; usually 16-bit data
        raw = np.asarray(img)
        return raw.astype(np.float32), 16 if raw.min() >= 0 and raw.max() <= 0xFFFF else 32
    if mode == "1":
        return np.asarray(img.convert("L"), dtype=np.float32), 8
    if mode in ("P", "PA"):
        img = img.convert("RGBA")  # the palette's transparency, if any, becomes alpha
    elif mode in ("CMYK", "YCbCr", "RGBX", "LAB", "HSV"):
        img = img.convert("RGB")
    elif mode not in ("RGB", "RGBA", "LA"):
        return None, 0
    return _composite_grey(np.asarray(img, dtype=np.float32)), 8


def _composite_grey(arr: np.ndarray) -> np.ndarray:
    """Grey by BT.601 luma from (H, W, C) LA/RGB/RGBA values, alpha composited on black.

    Black, not dropping alpha: a transparent pixel carries no signal, and black is "no
    attenuation" (air), the neutral background of a radiograph; dropping alpha would instead show
    whatever colour an exporter left under the transparency, often white, which reads as bone.
    """
    has_alpha = arr.shape[-1] in (2, 4)
    colour = arr[..., :-1] if has_alpha else arr
    grey = colour[..., 0] if colour.shape[-1] == 1 else colour @ _LUMA
    if has_alpha:
        grey = grey * (arr[..., -1] / np.float32(255))
    return np.ascontiguousarray(grey, dtype=np.float32)
