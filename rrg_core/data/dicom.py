"""The DICOM half of :func:`rrg_core.data.images.load_image`.

The file is read twice: first without pixel data, so that every refusal (no image, multi-frame,
colour, over the pixel budget, too small, no decoder) is decided from the header before anything
is decompressed; then whole, to decode. Intensities go through the modality LUT (rescale), then
the VOI LUT or window, then MONOCHROME1 inversion. Only :class:`ImageMeta` survives: the pydicom
Dataset, with its patient identifiers, never leaves this module.
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from rrg_core.data.radiograph import (
    ImageMeta,
    Radiograph,
    check_dimensions,
    full_range_window,
    make_radiograph,
)
from rrg_core.errors import ImageLoadError

__all__ = ["read_dicom"]

log = logging.getLogger(__name__)

# pydicom's parser and pixel handlers raise many types on malformed input; all mean "damaged file".
# ImageLoadError is a ValueError: raise it outside the try blocks that catch these.
_DICOM_ERRORS = (
    InvalidDicomError, ValueError, TypeError, KeyError, IndexError, AttributeError, EOFError, OSError,
    struct.error, OverflowError, NotImplementedError, RuntimeError, MemoryError,
)  # fmt: skip
_GREY = ("MONOCHROME1", "MONOCHROME2")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_EXPORT_HINT = "export it uncompressed or as JPEG, JPEG-LS, JPEG 2000 or RLE"


@dataclass(frozen=True)
class _Header:
    """The header values the checks and the metadata need, converted once."""

    rows: int | None
    columns: int | None
    frames: int
    samples: int
    photometric: str | None
    bits_stored: int
    transfer_syntax: UID
    modality: str | None
    view_position: str | None
    pixel_spacing: tuple[float, float] | None
    element_count: int

    @classmethod
    def from_dataset(cls, ds: Dataset) -> _Header:
        rows, columns = ds.get("Rows"), ds.get("Columns")
        return cls(
            rows=None if rows is None else int(rows),
            columns=None if columns is None else int(columns),
            frames=int(ds.get("NumberOfFrames") or 1),
            samples=int(ds.get("SamplesPerPixel") or 1),
            photometric=_text(ds.get("PhotometricInterpretation")),
            bits_stored=int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16),
            transfer_syntax=_transfer_syntax(ds),
            modality=_text(ds.get("Modality")),
            view_position=_text(ds.get("ViewPosition")),
            pixel_spacing=_pixel_spacing(ds),
            element_count=len(ds),
        )

    def meta(self, width: int, height: int) -> ImageMeta:
        return ImageMeta(
            "dicom", width, height, self.bits_stored, self.modality, self.view_position,
            self.photometric, self.pixel_spacing,
        )  # fmt: skip


def read_dicom(fp: BinaryIO, label: str, *, force: bool, max_pixels: int, min_side: int) -> Radiograph:
    """Read a greyscale single-frame DICOM from ``fp`` (seekable) into a :class:`Radiograph`.

    ``force`` reads a stream without the 128-byte preamble and 'DICM' prefix. Raises
    :class:`ImageLoadError` for anything that is not a decodable greyscale radiograph.
    """
    with _refuse_damaged(label, "is not a readable DICOM file: it is truncated or damaged"):
        header = _Header.from_dataset(pydicom.dcmread(fp, force=force, stop_before_pixels=True))
    if force and header.element_count == 0:
        raise ImageLoadError(f"{label} is not an image this app can read (not a PNG, JPEG or DICOM file)")
    _check_header(header, label, max_pixels=max_pixels, min_side=min_side)
    fp.seek(0)
    with _refuse_damaged(label, "is not a readable DICOM file: it is truncated or damaged"):
        ds = pydicom.dcmread(fp, force=force)
    values = _decode(ds, header, label)
    invert = header.photometric == "MONOCHROME1"
    lut_window, pixels = _voi_lut(ds, values, invert, label)
    # With both a VOI LUT and a window, pixels follow the LUT (as viewers do) while ``window`` keeps
    # the file's window: it is the better starting point for the UI's linear sliders.
    window = _first_window(ds, label) or lut_window or full_range_window(values)
    meta = header.meta(width=values.shape[1], height=values.shape[0])
    return make_radiograph(values, meta, window=window, invert=invert, pixels=pixels)


@contextmanager
def _refuse_damaged(label: str, problem: str) -> Iterator[None]:
    """Turn pydicom's exceptions inside the block into an ImageLoadError that says ``problem``."""
    try:
        yield
    except ImageLoadError:
        raise
    except _DICOM_ERRORS as exc:
        raise ImageLoadError(f"{label} {problem} ({exc}); {_EXPORT_HINT}") from exc


def _check_header(header: _Header, label: str, *, max_pixels: int, min_side: int) -> None:
    """Every refusal that the header alone can decide, in order of usefulness of the message."""
    if header.rows is None or header.columns is None:
        raise ImageLoadError(
            f"{label} has no image: it is a DICOM without pixel data (modality "
            f"{header.modality or 'unknown'}), e.g. a report, a treatment plan or a truncated file; "
            "choose the complete DICOM file of the radiograph"
        )
    if header.frames > 1:
        raise ImageLoadError(
            f"{label} is a multi-frame DICOM ({header.frames} frames), e.g. a cine or ultrasound clip; "
            "export a single radiograph frame"
        )
    if header.samples != 1 or (header.photometric is not None and header.photometric not in _GREY):
        raise ImageLoadError(
            f"{label} is a colour DICOM ({header.photometric or 'no photometric interpretation'}, "
            f"samples per pixel: {header.samples}), "
            "e.g. an ultrasound frame or a screen capture; only greyscale (MONOCHROME1/2) radiographs "
            "can be read"
        )
    count = header.rows * header.columns * header.frames * header.samples
    check_dimensions(
        label, header.columns, header.rows, max_pixels=max_pixels, min_side=min_side, count=count
    )
    _check_decoder(header.transfer_syntax, label)


def _check_decoder(tsyntax: UID, label: str) -> None:
    """Refuse a transfer syntax that no installed plugin decodes, before reading the pixel data."""
    try:
        available = get_decoder(tsyntax).is_available
    except NotImplementedError:  # pydicom knows no decoder at all (e.g. MPEG video)
        available = False
    if not available:
        raise ImageLoadError(
            f"{label} uses the transfer syntax '{tsyntax.name}' ({tsyntax}), which no installed "
            f"decoder can read; {_EXPORT_HINT}"
        )


def _decode(ds: Dataset, header: _Header, label: str) -> np.ndarray:
    """Decode the single frame and apply the modality LUT (rescale slope/intercept or LUT)."""
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise ImageLoadError(
            f"{label} is a DICOM without pixel data (it has image attributes but no image); "
            "choose the DICOM file of the radiograph itself"
        )
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:
        # A stream without file meta: decoders need the syntax, which the reader has inferred.
        ds.file_meta.TransferSyntaxUID = header.transfer_syntax
    with _refuse_damaged(
        label,
        "has DICOM pixel data that cannot be decoded: it is truncated, damaged or in an unsupported encoding",
    ):
        return apply_modality_lut(ds.pixel_array, ds).astype(np.float32, copy=False)


def _voi_lut(
    ds: Dataset, values: np.ndarray, invert: bool, label: str
) -> tuple[tuple[float, float] | None, np.ndarray | None]:
    """Apply the first VOI LUT Sequence item; (None, None) when there is none (or it is unusable).

    pydicom's ``apply_voi`` decodes the table (descriptor, OW/US, endianness) from a ramp over its
    input range; the table is then scaled by its own min..max, because LUT descriptors often
    overstate the output bits. The returned window is the LUT's input range, as a linear stand-in
    for the UI's window/level sliders.
    """
    if not ds.get("VOILUTSequence"):
        return None, None
    try:
        entries, first, _bits = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor)
        entries = entries or 65536  # 0 means 2**16 entries
        table = apply_voi(np.arange(first, first + entries), ds).astype(np.float32)
    except _DICOM_ERRORS as exc:
        log.warning("%s: unusable VOI LUT (%s); using the window or the full range instead", label, exc)
        return None, None
    lo, hi = float(table.min()), float(table.max())
    table = (table - lo) / np.float32(hi - lo) if hi > lo else np.zeros_like(table)
    if invert:
        table = 1 - table
    # Values outside the LUT's input range take its first or last entry, as the standard says.
    index = np.clip(np.rint(values), first, first + entries - 1).astype(np.int64) - first
    return (first + entries / 2, float(entries)), table[index]


def _first_window(ds: Dataset, label: str) -> tuple[float, float] | None:
    """The first (centre, width) of Window Center/Width, or None when absent or unusable.

    The window is applied linearly (the UI's sliders are linear too); a SIGMOID VOI LUT Function
    is therefore shown as LINEAR.
    """
    centre, width = _first_float(ds.get("WindowCenter")), _first_float(ds.get("WindowWidth"))
    if centre is None or width is None:
        return None
    if width <= 0:
        log.warning("%s: ignoring window width %s (must be > 0); using the full range", label, width)
        return None
    return centre, width


def _first_float(value: object) -> float | None:
    """The first number of a (possibly multi-valued) DS element, None if absent or not a number."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        value = value[0] if len(value) else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """Row and column spacing in mm, from PixelSpacing, else ImagerPixelSpacing.

    Zero or negative values (RG1 has 0\\0) mean "unknown", not a measurement: None then.
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None or isinstance(value, str | bytes) or len(value) != 2:
            continue
        row, column = (_first_float(v) for v in value)
        if row and column and min(row, column) > 0:
            return row, column
    return None


def _transfer_syntax(ds: Dataset) -> UID:
    """The file's transfer syntax; for a stream without file meta, the encoding the reader found."""
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax:
        return UID(tsyntax)
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little in (True, None) else ExplicitVRBigEndian
