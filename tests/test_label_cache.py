"""The training label cache is keyed by the labeler's version: a changed labeler relabels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrg_core.data.datasets import StudyRecord
from rrg_core.labeler import LABELER_VERSION, labeler_key
from train.dcrrg import data as dcrrg_data
from train.dcrrg.data import label_studies

RECORDS = [StudyRecord("CXR1", "Calcified granuloma. Small left effusion.", ("a.png",), "train")]


def test_cache_records_the_version_and_is_reused(tmp_path: Path) -> None:
    cache = tmp_path / "labels.json"
    first = label_studies(RECORDS, cache)
    stored = json.loads(cache.read_text())
    assert stored["_labeler_version"] == labeler_key() == LABELER_VERSION
    assert first["CXR1"].labels["Pleural Effusion"] == 1
    assert first["CXR1"].labels["Lung Lesion"] is None  # CheXpert: a granuloma is no Lung Lesion
    stored["CXR1"]["labels"]["Edema"] = 1  # a cached value is used as is while the version matches
    cache.write_text(json.dumps(stored))
    assert label_studies(RECORDS, cache)["CXR1"].labels["Edema"] == 1


@pytest.mark.parametrize("version", [None, "2026-11-old"])
def test_cache_of_another_labeler_version_is_relabelled(tmp_path: Path, version: str | None) -> None:
    cache = tmp_path / "labels.json"
    stale = {"CXR1": {"report": RECORDS[0].report, "labels": {"Lung Lesion": 1}, "sentences": {}}}
    if version is not None:
        stale[dcrrg_data._VERSION_KEY] = version
    cache.write_text(json.dumps(stale))
    labels = label_studies(RECORDS, cache)["CXR1"].labels
    assert labels["Lung Lesion"] is None and labels["Pleural Effusion"] == 1
    assert json.loads(cache.read_text())["_labeler_version"] == labeler_key()
