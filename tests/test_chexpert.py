"""CheXpert-style image-only CSVs: reading, error messages and the Dataset."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from rrg_core.data.chexpert import ChexpertDataset, label_vector, read_chexpert_csv
from rrg_core.data.sampling import BalancedObservationSampler
from rrg_core.data.transforms import build_transform, dcrrg_transform_config
from rrg_core.errors import DatasetError, ImagesMissingError
from rrg_core.observations import OBSERVATIONS, Label

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]
FOLDER = "CheXpert-v1.0-small"


def _row(path: str, **labels: str) -> list[str]:
    values = {name.replace(" ", "_"): value for name, value in labels.items()}
    return [
        path,
        "Female",
        "68",
        "Frontal",
        "AP",
        *(values.get(n.replace(" ", "_"), "") for n in OBSERVATIONS),
    ]


def _write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _image_path(patient: int) -> str:
    return f"{FOLDER}/train/patient{patient:05d}/study1/view1_frontal.jpg"


@pytest.fixture
def chexpert(tmp_path: Path) -> tuple[Path, Path]:
    """A CSV of 4 images and the image root (the folder that holds CheXpert-v1.0-small)."""
    rows = [
        _row(_image_path(1), Pleural_Effusion="1.0", No_Finding=""),
        _row(_image_path(2), Pleural_Effusion="0.0", Cardiomegaly="-1.0"),
        _row(_image_path(3), Pleural_Effusion="-1.0", Support_Devices="1.0"),
        _row(_image_path(4), No_Finding="1.0"),
    ]
    for patient in range(1, 5):
        target = tmp_path / _image_path(patient)
        target.parent.mkdir(parents=True)
        Image.new("L", (96, 96), color=50 * patient).save(target, format="JPEG")
    return _write_csv(tmp_path / "train.csv", rows), tmp_path


def test_read_records(chexpert):
    csv_path, _ = chexpert
    records = read_chexpert_csv(csv_path)
    assert [r.path for r in records] == [_image_path(i) for i in range(1, 5)]
    assert [r.line for r in records] == [2, 3, 4, 5]
    first, second = records[0].labels, records[1].labels
    assert set(first) == set(OBSERVATIONS)
    assert first["Pleural Effusion"] == Label.POSITIVE and first["No Finding"] is None
    assert second["Pleural Effusion"] == Label.NEGATIVE and second["Cardiomegaly"] == Label.UNCERTAIN


def test_label_vector():
    labels = {name: None for name in OBSERVATIONS} | {"Edema": Label.POSITIVE, "Fracture": Label.UNCERTAIN}
    vector = label_vector(labels)
    assert vector.shape == (14,) and vector.dtype == torch.float32
    assert vector[OBSERVATIONS.index("Edema")] == 1 and vector[OBSERVATIONS.index("Fracture")] == -1
    assert int((vector == 0).sum()) == 12


def test_dataset_items(chexpert):
    csv_path, root = chexpert
    transform = build_transform(dcrrg_transform_config("resnet50", train=False), train=False)
    dataset = ChexpertDataset.from_csv(csv_path, root, transform=transform)
    assert len(dataset) == 4
    image, labels = dataset[0]
    assert image.shape == (3, 224, 224)
    assert labels["Pleural Effusion"] == Label.POSITIVE
    vectors = ChexpertDataset.from_csv(csv_path, root, label_format="vector")
    image, vector = vectors[2]
    assert image.shape == (1, 96, 96) and image.min() >= 0 and image.max() <= 1
    assert vector[OBSERVATIONS.index("Pleural Effusion")] == -1
    assert vector[OBSERVATIONS.index("Support Devices")] == 1


def test_labels_feed_the_balanced_sampler(chexpert):
    csv_path, root = chexpert
    dataset = ChexpertDataset.from_csv(csv_path, root)
    sampler = BalancedObservationSampler(dataset.labels, "Pleural Effusion", seed=0)
    assert set(sampler) == {0, 1, 3}  # item 2 is uncertain


def test_missing_columns_are_listed(tmp_path: Path):
    header = [c for c in HEADER if c not in ("Edema", "Fracture")]
    path = _write_csv(tmp_path / "bad.csv", [], header)
    with pytest.raises(DatasetError, match=r"bad\.csv: missing columns: Edema, Fracture"):
        read_chexpert_csv(path)
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match="empty file"):
        read_chexpert_csv(empty)


@pytest.mark.parametrize(
    ("row", "words"),
    [
        (_row(_image_path(9), Edema="2.0"), r"bad\.csv, line 3: Edema value '2.0' is not one of"),
        (_row(_image_path(9), Edema="yes"), r"bad\.csv, line 3: Edema value 'yes'"),
        (_row("", Edema="1.0"), r"bad\.csv, line 3: no image path"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, row, words):
    path = _write_csv(tmp_path / "bad.csv", [_row(_image_path(1)), row])
    with pytest.raises(DatasetError, match=words):
        read_chexpert_csv(path)


def test_missing_image_files(chexpert):
    csv_path, root = chexpert
    (root / _image_path(3)).unlink()
    with pytest.raises(ImagesMissingError, match=r"1 of 4 image files are missing.*line 4"):
        ChexpertDataset.from_csv(csv_path, root)
    # Paths are relative to the folder holding CheXpert-v1.0-small, not to that folder itself.
    with pytest.raises(ImagesMissingError, match="4 of 4"):
        ChexpertDataset.from_csv(csv_path, root / FOLDER)
    assert len(ChexpertDataset.from_csv(csv_path, root, check_files=False)) == 4
    with pytest.raises(ImagesMissingError, match="not a directory"):
        ChexpertDataset.from_csv(csv_path, root / "nowhere")


def test_bad_label_format(chexpert):
    csv_path, root = chexpert
    with pytest.raises(ValueError, match="label_format"):
        ChexpertDataset.from_csv(csv_path, root, label_format="onehot")
