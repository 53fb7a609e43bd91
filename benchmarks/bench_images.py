"""Time load_image on a 2,048 x 2,048 16-bit PNG and the same image as an uncompressed DICOM.

Both files are synthetic (a smooth 12-bit "body" with noise, so that the PNG compresses like a
real radiograph rather than like a flat or random image) and are written to a temporary folder.
Each is loaded a few times to warm up, then timed over --runs loads.

Run from the repository root:  .venv/bin/python benchmarks/bench_images.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from rrg_core.data.images import load_image  # noqa: E402

SIDE = 2048
DIGITAL_XRAY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def synthetic_radiograph(side: int, seed: int = 0) -> np.ndarray:
    """uint16 (side, side) with 12-bit values: a bright elliptical body, darker 'lungs', noise."""
    y, x = np.mgrid[-1 : 1 : side * 1j, -1 : 1 : side * 1j]
    body = np.clip(1.2 - (x / 0.9) ** 2 - (y / 1.1) ** 2, 0, 1)
    lungs = np.exp(-(((np.abs(x) - 0.4) / 0.22) ** 2) - ((y + 0.1) / 0.45) ** 2)
    image = 600 + 3000 * body - 1400 * lungs * body
    image += np.random.default_rng(seed).normal(0, 40, size=image.shape)
    return np.clip(image, 0, 4095).astype(np.uint16)


def write_png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)  # mode I;16: a 16-bit greyscale PNG
    return path


def write_dicom(path: Path, pixels: np.ndarray) -> Path:
    """A minimal valid DX file: file meta, MONOCHROME2, 16 bits allocated, 12 stored, a window."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DIGITAL_XRAY_FOR_PRESENTATION
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition = "DX", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelSpacing = [0.14, 0.14]
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def time_loads(path: Path, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        load_image(path)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        load_image(path)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed loads per file (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed loads first (default 3)")
    args = parser.parse_args()

    pixels = synthetic_radiograph(SIDE)
    with tempfile.TemporaryDirectory() as folder:
        files = {
            "PNG 16-bit": write_png(Path(folder) / "chest.png", pixels),
            "DICOM 16-bit uncompressed": write_dicom(Path(folder) / "chest.dcm", pixels),
        }
        print(f"load_image on {SIDE}x{SIDE} images, {args.warmup} warm-up + {args.runs} timed loads each")
        for label, path in files.items():
            times = time_loads(path, args.runs, args.warmup)
            mean = statistics.fmean(times)
            size_mb = path.stat().st_size / 1e6
            print(
                f"  {label:<27} {size_mb:5.1f} MB  {1 / mean:6.1f} images/s  "
                f"{mean * 1e3:6.1f} ms/image (median {statistics.median(times) * 1e3:.1f}, "
                f"min {min(times) * 1e3:.1f})"
            )


if __name__ == "__main__":
    main()
