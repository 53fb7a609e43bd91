"""Tests for rrg_core.data.images: every PNG/JPEG mode, hostile and broken files, windowing."""

from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path

import numpy as np
import pytest
from imaging_helpers import GRADIENT, NOISE, check_invariants, dicom_path, png_claiming, refused, save
from PIL import Image

from rrg_core.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageMeta,
    _grey_values,
    apply_window,
    load_image,
)

# --------------------------------------------------------------------------- PNG / JPEG


def test_png_8bit_grey(tmp_path: Path) -> None:
    r = load_image(save(Image.fromarray(NOISE, "L"), tmp_path / "grey.png"))
    check_invariants(r)
    np.testing.assert_array_equal(r.values, NOISE.astype(np.float32))
    np.testing.assert_array_equal(r.display(), NOISE)  # 8-bit: display is the file itself
    assert r.window == (127.5, 255.0) and not r.invert
    assert r.meta == ImageMeta("png", 128, 96, 8)


def test_png_16bit_uses_full_range_window(tmp_path: Path) -> None:
    data = np.linspace(1000, 4095, 96 * 128).reshape(96, 128).astype(np.uint16)  # 12-bit data
    img = Image.fromarray(data)
    assert img.mode == "I;16"
    r = load_image(save(img, tmp_path / "deep.png"))
    check_invariants(r)
    np.testing.assert_array_equal(r.values, data.astype(np.float32))
    assert r.meta.bits_stored == 16
    assert r.window == ((1000 + 4095) / 2, 4095 - 1000)
    assert (r.pixels.min(), r.pixels.max()) == (0.0, 1.0)


def test_32bit_integer_mode_is_read_as_deep_grey() -> None:
    # Pillow 12 opens 16-bit PNGs as I;16 and deprecates saving mode I as PNG, so mode I (what
    # older Pillows returned) is checked on the decoding step itself.
    data = np.array([[0, 4095], [70000, 5]], dtype=np.int32)
    values, bits = _grey_values(Image.fromarray(data))
    np.testing.assert_array_equal(values, data.astype(np.float32))
    assert bits == 32
    assert _grey_values(Image.fromarray(data.clip(0, 4095)))[1] == 16


def test_rgb_becomes_grey_by_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[:32] = (255, 0, 0)
    rgb[32:64] = (0, 255, 0)
    rgb[64:] = (200, 200, 200)  # a grey exported as RGB stays the same grey
    r = load_image(save(Image.fromarray(rgb, "RGB"), tmp_path / "rgb.png"))
    check_invariants(r)
    assert r.values.shape == (96, 128)
    assert r.values[0, 0] == pytest.approx(0.299 * 255, abs=1e-3)
    assert r.values[40, 0] == pytest.approx(0.587 * 255, abs=1e-3)
    assert r.values[80, 0] == pytest.approx(200, abs=1e-3)
    assert r.display()[80, 0] == 200


def test_alpha_is_composited_on_black(tmp_path: Path) -> None:
    rgba = np.full((96, 128, 4), 200, np.uint8)
    rgba[..., 3] = 255
    rgba[:48, :, 3] = 0  # fully transparent top half
    rgba[48:, :64, 3] = 51  # 20 % opaque
    r = load_image(save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png"))
    check_invariants(r)
    assert r.values[0, 0] == 0
    assert r.values[60, 0] == pytest.approx(200 * 0.2, abs=1e-3)
    assert r.values[60, 100] == pytest.approx(200, abs=1e-3)
    la = Image.fromarray(np.dstack([NOISE, np.full_like(NOISE, 255)]), "LA")
    r = load_image(save(la, tmp_path / "la.png"))
    np.testing.assert_array_equal(r.values, NOISE.astype(np.float32))


def test_palette_png_becomes_grey(tmp_path: Path) -> None:
    img = Image.fromarray((GRADIENT // 64).astype(np.uint8), "P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255, 255, 255, 255])  # black, red, blue, white
    r = load_image(save(img, tmp_path / "palette.png"))
    check_invariants(r)
    assert sorted(np.unique(r.values).round(2)) == pytest.approx([0, 0.114 * 255, 0.299 * 255, 255], abs=0.01)


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_jpeg_modes(tmp_path: Path, mode: str) -> None:
    img = Image.fromarray(GRADIENT, "L").convert(mode)
    r = load_image(save(img, tmp_path / "x.jpg", quality=95))
    check_invariants(r)
    assert r.meta.source_format == "jpeg" and r.meta.bits_stored == 8
    assert np.abs(r.values - GRADIENT).mean() < 3  # lossy


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    r = load_image(save(Image.fromarray(GRADIENT, "L"), tmp_path / "rot.jpg", exif=exif))
    assert r.values.shape == (128, 96)


def test_format_comes_from_content_not_extension(tmp_path: Path) -> None:
    png_as_dcm = save(Image.fromarray(NOISE, "L"), tmp_path / "image.dcm", format="PNG")
    assert load_image(png_as_dcm).meta.source_format == "png"
    dcm_as_png = tmp_path / "scan.png"
    dcm_as_png.write_bytes(Path(dicom_path("CT_small.dcm")).read_bytes())
    assert load_image(dcm_as_png).meta.source_format == "dicom"
    tiff = save(Image.fromarray(NOISE, "L"), tmp_path / "image.png", format="TIFF")
    refused(tiff, "not an image", "PNG, JPEG or DICOM")


def test_bytes_file_objects_and_paths_give_the_same_image(tmp_path: Path) -> None:
    path = save(Image.fromarray(NOISE, "L"), tmp_path / "same.png")
    data = path.read_bytes()
    with path.open("rb") as handle:
        from_handle = load_image(handle)
    loads = [load_image(str(path)), load_image(data), load_image(bytearray(data)), from_handle]
    loads.append(load_image(io.BytesIO(data), name="upload.png"))
    for r in loads:
        np.testing.assert_array_equal(r.values, NOISE.astype(np.float32))
    dicom = Path(dicom_path("CT_small.dcm")).read_bytes()
    np.testing.assert_array_equal(load_image(io.BytesIO(dicom)).values, load_image(dicom).values)


def test_radiograph_is_immutable_and_tensor_is_a_copy(tmp_path: Path) -> None:
    r = load_image(save(Image.fromarray(NOISE, "L"), tmp_path / "n.png"))
    with pytest.raises(ValueError):
        r.pixels[0, 0] = 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.invert = True  # type: ignore[misc]
    tensor = r.tensor()
    tensor.zero_()
    assert r.pixels.max() > 0


# --------------------------------------------------------------------------- hostile / broken input


def test_empty_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    message = refused(empty, "empty", "0 bytes")
    assert "empty.png" in message
    refused(b"", "empty")


@pytest.mark.parametrize(("fmt", "suffix"), [("PNG", "png"), ("JPEG", "jpg")])
def test_truncated_png_and_jpeg_are_refused(tmp_path: Path, fmt: str, suffix: str) -> None:
    data = save(Image.fromarray(NOISE, "L"), tmp_path / f"n.{suffix}", format=fmt).read_bytes()
    refused(data[: len(data) // 2], "truncated", fmt, name=f"half.{suffix}")
    refused(data[:24], fmt, "damaged", name=f"head.{suffix}")


def test_random_bytes_are_refused() -> None:
    data = np.random.default_rng(1).bytes(4096)
    refused(data, "not an image", "PNG, JPEG or DICOM")


def test_text_file_named_png_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("Findings: no acute cardiopulmonary process.\n" * 10)
    message = refused(text, "not an image", "extension")
    assert "notes.png" in message


def test_png_header_claiming_a_huge_image_is_refused_quickly() -> None:
    start = time.perf_counter()
    refused(png_claiming(100_000, 100_000), "too large", "budget", f"{DEFAULT_MAX_PIXELS:,}")
    refused(png_claiming(8000, 8000), "too large", "8000x8000", "budget", f"{DEFAULT_MAX_PIXELS:,}")
    assert time.perf_counter() - start < 1.0
    refused(png_claiming(300, 300), "budget", "50,000", max_pixels=50_000)


def test_tiny_png_is_refused(tmp_path: Path) -> None:
    path = save(Image.fromarray(NOISE[:32, :32], "L"), tmp_path / "thumb.png")
    refused(path, "too small", "32x32", "64x64")


def test_missing_file_and_text_mode_stream_are_refused(tmp_path: Path) -> None:
    refused(tmp_path / "nowhere.png", "cannot be opened", "nowhere.png")
    refused(io.StringIO("hello"), "binary")


# --------------------------------------------------------------------------- apply_window


def test_apply_window_maps_clips_and_inverts() -> None:
    values = np.array([[-10.0, 0.0, 50.0, 100.0, 200.0]])
    np.testing.assert_allclose(apply_window(values, 50, 100), [[0, 0, 0.5, 1, 1]])
    np.testing.assert_allclose(apply_window(values, 50, 100, invert=True), [[1, 1, 0.5, 0, 0]])
    assert apply_window(values, 50, 100).dtype == np.float32
    assert values[0, 0] == -10.0  # input untouched
    grey = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(np.rint(apply_window(grey, 127.5, 255) * 255), grey)
    for bad in ((50, 0), (50, -1), (float("nan"), 10)):
        with pytest.raises(ValueError):
            apply_window(values, *bad)
