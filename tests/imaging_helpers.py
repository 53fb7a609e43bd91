"""Helpers shared by the image-loading tests (test_images.py, test_dicom.py)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from rrg_core.data.images import (
    Radiograph,
    load_image,
)
from rrg_core.errors import ImageLoadError

# --------------------------------------------------------------------------- helpers


def dicom_path(name: str) -> str:
    """A pydicom / pydicom-data test file, local only (download=False: this machine is offline)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not available offline")
    return str(path)


def dicom_bytes(ds: Dataset, **write_args: object) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, **write_args)
    return buf.getvalue()


def refused(source: object, *words: str, **kwargs: object) -> str:
    """Assert that load_image refuses ``source`` with a message containing every word; return it."""
    with pytest.raises(ImageLoadError) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


def save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    img.save(path, **kwargs)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header (valid CRCs) that claims width x height, with almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b""))
        + png_chunk(b"IEND", b"")
    )


def check_invariants(r: Radiograph) -> None:
    """What every loaded radiograph promises, whatever its source."""
    h, w = r.values.shape
    assert (r.meta.height, r.meta.width) == (h, w)
    assert r.values.dtype == np.float32 and r.pixels.dtype == np.float32
    assert r.pixels.shape == (h, w)
    assert r.pixels.min() >= 0.0 and r.pixels.max() <= 1.0
    shown = r.display()
    assert shown.dtype == np.uint8 and shown.shape == (h, w)
    np.testing.assert_array_equal(shown, np.rint(r.pixels * 255).astype(np.uint8))
    tensor = r.tensor()
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (1, h, w)


NOISE = np.random.default_rng(0).integers(0, 256, size=(96, 128), dtype=np.uint8)
GRADIENT = np.tile(np.linspace(0, 255, 128, dtype=np.float32), (96, 1)).round().astype(np.uint8)
