"""Tests for rrg_core.data.dicom through load_image: real DICOMs, compressed syntaxes, refusals."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from imaging_helpers import check_invariants, dicom_bytes, dicom_path, refused
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from rrg_core.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageMeta,
    Radiograph,
    apply_window,
    load_image,
)

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
