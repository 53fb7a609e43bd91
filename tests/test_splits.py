"""Training records with extra data (exported corrections): both trainers read them the same way."""

from __future__ import annotations

import json
import shutil

import pytest

from rrg_core.data.datasets import read_annotation
from rrg_core.errors import DatasetError
from train.common.splits import read_training_records
from train.uar.data import ImageSettings, prepare


@pytest.fixture
def extra(phantoms, tmp_path):
    """Two phantom training studies re-labelled as a corrections export (new ids, one view each)."""
    out = tmp_path / "corrections"
    entries = []
    for k, record in enumerate(read_annotation(phantoms)["train"][:2]):
        study = f"review-{k}"
        (out / "images" / study).mkdir(parents=True)
        shutil.copy(phantoms / "images" / record.image_paths[0], out / "images" / study / "0.png")
        entries.append({"id": study, "report": record.report, "image_path": [f"{study}/0.png"],
                        "labels": {"Cardiomegaly": 1}})  # fmt: skip
    (out / "annotation.json").write_text(json.dumps({"train": entries, "val": [], "test": []}))
    return out


def test_extra_training_studies_follow_the_data_sets_own(phantoms, extra):
    train, val, _spec, paths = read_training_records(phantoms, extra)
    own = read_annotation(phantoms)
    assert [r.id for r in train] == [r.id for r in own["train"]] + ["review-0", "review-1"]
    assert [r.id for r in val] == [r.id for r in own["val"]]
    assert paths["review-1"] == [extra / "images" / "review-1" / "0.png"]


def test_extra_data_is_checked(phantoms, extra, tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_training_records(phantoms, tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="repeats study ids"):
        read_training_records(phantoms, phantoms)


def test_uar_takes_extra_training_data(phantoms, extra):
    data = prepare(phantoms, ImageSettings(32, 32, 1), None, workers=0, show=False, extra=extra)
    assert [r.id for r in data.train_records][-2:] == ["review-0", "review-1"]
    assert data.train_images.shape[0] == len(data.train_records) == len(data.report_ids)
