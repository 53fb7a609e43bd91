"""Tests for rrg_core.data.images (and .dicom): real DICOMs, every PNG/JPEG mode, hostile files."""

from __future__ import annotations

import dataclasses
import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from rrg_core.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageMeta,
    Radiograph,
    _grey_values,
    apply_window,
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


# --------------------------------------------------------------------------- real DICOM


@pytest.fixture(scope="module")
def rg1() -> Radiograph:
    return load_image(dicom_path("RG1_UNCR.dcm"))


def test_rg1_chest_pa_metadata_and_window(rg1: Radiograph) -> None:
    check_invariants(rg1)
    assert rg1.values.shape == (1955, 1841)
    assert rg1.meta == ImageMeta(
        source_format="dicom",
        width=1841,
        height=1955,
        bits_stored=15,
        modality="CR",
        view_position="PA",
        photometric_interpretation="MONOCHROME1",
        pixel_spacing=None,  # the file says 0\0, i.e. unknown
    )
    assert rg1.window == (15000.0, 30000.0)
    raw = pydicom.dcmread(dicom_path("RG1_UNCR.dcm")).pixel_array
    np.testing.assert_array_equal(rg1.values, raw.astype(np.float32))  # no rescale in this file


def test_rg1_monochrome1_is_inverted_so_bright_means_dense(rg1: Radiograph) -> None:
    assert rg1.invert
    np.testing.assert_allclose(rg1.pixels, 1 - apply_window(rg1.values, 15000, 30000), atol=1e-6)
    h, w = rg1.pixels.shape
    band = slice(int(0.3 * h), int(0.5 * h))
    lung = rg1.pixels[band, int(0.2 * w) : int(0.3 * w)].mean()
    mediastinum = rg1.pixels[band, int(0.47 * w) : int(0.53 * w)].mean()
    assert lung < mediastinum - 0.1  # air is dark, the spine and heart bright


def test_rg1_jpeg2000_lossless_equals_uncompressed_and_lossy_is_close(rg1: Radiograph) -> None:
    lossless = load_image(dicom_path("RG1_J2KR.dcm"))
    np.testing.assert_array_equal(lossless.values, rg1.values)
    np.testing.assert_array_equal(lossless.pixels, rg1.pixels)
    lossy = load_image(dicom_path("RG1_J2KI.dcm"))
    assert np.abs(lossy.pixels - rg1.pixels).mean() < 0.01
    assert lossy.meta == rg1.meta


def test_rescale_slope_intercept_is_applied_and_window_is_full_range() -> None:
    path = dicom_path("CT_small.dcm")
    ds = pydicom.dcmread(path)
    r = load_image(path)
    check_invariants(r)
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(r.values, expected.astype(np.float32))
    assert r.values.min() < 0  # Hounsfield units: the intercept (-1024) was applied
    lo, hi = float(r.values.min()), float(r.values.max())
    assert r.window == ((lo + hi) / 2, hi - lo)  # no window in the file: min..max
    assert (r.pixels.min(), r.pixels.max()) == (0.0, 1.0)
    assert r.meta.pixel_spacing == pytest.approx((0.661468, 0.661468))
    assert (r.meta.modality, r.meta.photometric_interpretation) == ("CT", "MONOCHROME2")
    assert not r.invert


def test_dicom_window_centre_width_is_used() -> None:
    r = load_image(dicom_path("MR_small.dcm"))  # 64x64: exactly the minimum side
    assert r.window == (600.0, 1600.0)
    np.testing.assert_allclose(r.pixels, apply_window(r.values, 600, 1600))


def test_first_of_several_windows_is_used() -> None:
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    ds.WindowCenter, ds.WindowWidth = [40, 400], [400, 1500]
    assert load_image(dicom_bytes(ds)).window == (40.0, 400.0)


def test_voi_lut_sequence_is_used() -> None:
    path = dicom_path("vlut_04.dcm")
    ds = pydicom.dcmread(path)
    r = load_image(path)
    check_invariants(r)
    expected = apply_voi_lut(ds.pixel_array, ds).astype(np.float32)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(r.pixels, expected, atol=1e-6)


def test_modality_lut_sequence_is_used() -> None:
    path = dicom_path("mlut_18.dcm")
    ds = pydicom.dcmread(path)
    r = load_image(path)
    np.testing.assert_array_equal(r.values, apply_modality_lut(ds.pixel_array, ds).astype(np.float32))


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
)
def test_compressed_transfer_syntaxes_decode_like_uncompressed(name: str) -> None:
    reference = load_image(dicom_path("MR_small.dcm"))
    r = load_image(dicom_path(name))
    np.testing.assert_array_equal(r.values, reference.values)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("JPEG2000.dcm", (1024, 256)),  # JPEG 2000 lossy, signed
        ("JPGExtended.dcm", (1024, 256)),  # JPEG extended 12-bit
        ("JPEG-LL.dcm", (1024, 256)),  # JPEG lossless
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", (768, 1024)),  # JPEG lossless, 8-bit
    ],
)
def test_jpeg_family_dicoms_decode(name: str, shape: tuple[int, int]) -> None:
    r = load_image(dicom_path(name))
    check_invariants(r)
    assert r.values.shape == shape


def test_dicom_without_preamble_or_file_meta_is_read() -> None:
    path = dicom_path("CT_small.dcm")
    reference = load_image(path)
    no_preamble = Path(path).read_bytes()[132:]  # starts with the (0002,0000) file meta group
    np.testing.assert_array_equal(load_image(no_preamble).values, reference.values)
    ds = pydicom.dcmread(path)
    del ds.file_meta
    ds.preamble = None
    bare = dicom_bytes(ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert bare[128:132] != b"DICM"
    np.testing.assert_array_equal(load_image(bare).values, reference.values)


def test_no_patient_identifiers_are_kept(rg1: Radiograph) -> None:
    for name in ("RG1_UNCR.dcm", "CT_small.dcm"):
        ds = pydicom.dcmread(dicom_path(name), stop_before_pixels=True)
        r = rg1 if name.startswith("RG1") else load_image(dicom_path(name))
        identifiers = [
            str(ds.get(keyword))
            for keyword in ("PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID",
                            "SOPInstanceUID", "InstitutionName", "AccessionNumber")
            if ds.get(keyword)
        ]  # fmt: skip
        assert identifiers  # the files do carry some
        fields = [getattr(r, f.name) for f in dataclasses.fields(r)]
        fields += [getattr(r.meta, f.name) for f in dataclasses.fields(r.meta)]
        assert not any(isinstance(value, Dataset) for value in fields)
        assert not any(isinstance(value, Dataset) for value in vars(r).values())
        assert {f.name for f in dataclasses.fields(r.meta)} == {
            "source_format", "width", "height", "bits_stored", "modality", "view_position",
            "photometric_interpretation", "pixel_spacing",
        }  # fmt: skip
        text = repr(r.meta) + " ".join(str(v) for v in fields if not isinstance(v, np.ndarray))
        for identifier in identifiers:
            assert identifier not in text


# --------------------------------------------------------------------------- DICOM refusals


def test_multi_frame_dicom_is_refused() -> None:
    refused(dicom_path("emri_small.dcm"), "multi-frame", "10 frames", "single", name="emri_small.dcm")


@pytest.mark.parametrize("name", ["SC_rgb.dcm", "US1_UNCR.dcm", "OT-PAL-8-face.dcm"])
def test_colour_dicom_is_refused(name: str) -> None:
    message = refused(dicom_path(name), "colour", "greyscale", name=name)
    assert message.startswith(f"'{name}'")


def test_dicom_without_pixel_data_is_refused() -> None:
    refused(dicom_path("rtplan.dcm"), "no image", "without pixel data", "RTPLAN")
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    del ds.PixelData
    refused(dicom_bytes(ds), "without pixel data")


@pytest.mark.parametrize("name", ["rtdose_1frame.dcm", "JPEGLSNearLossless_16.dcm"])
def test_small_dicom_is_refused(name: str) -> None:
    refused(dicom_path(name), "too small", "64x64")


def test_min_side_is_configurable() -> None:
    refused(dicom_path("CT_small.dcm"), "too small", "128x128", "200x200", min_side=200)
    assert load_image(dicom_path("rtdose_1frame.dcm"), min_side=8).values.shape == (10, 10)


def test_dicom_over_pixel_budget_is_refused_from_the_header() -> None:
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    ds.Rows = ds.Columns = 60000  # the pixel data is still 128x128: decoding would fail, later
    start = time.perf_counter()
    refused(dicom_bytes(ds), "too large", "60000x60000", f"{DEFAULT_MAX_PIXELS:,}", "budget")
    assert time.perf_counter() - start < 1.0
    refused(dicom_path("CT_small.dcm"), "budget", "10,000", max_pixels=10_000)


@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_truncated_dicom_is_refused(keep: float) -> None:
    data = Path(dicom_path("CT_small.dcm")).read_bytes()
    refused(data[: int(len(data) * keep) + 132], "truncated", "complete DICOM" if keep < 0.1 else "export")


def test_pydicom_truncated_test_file_is_refused() -> None:
    refused(dicom_path("MR_truncated.dcm"), "truncated", "MR_truncated.dcm")


def test_undecodable_transfer_syntax_is_refused() -> None:
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    ds.PixelData = encapsulate([ds.PixelData])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2 video
    refused(dicom_bytes(ds), "transfer syntax", "MPEG2", "export")


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
