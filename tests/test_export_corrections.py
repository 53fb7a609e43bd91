"""``python -m train export-corrections``: final reviews -> an R2Gen-layout folder that the project's
dataset reader and ``train dcrrg --extra`` read. On SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from store_helpers import backend_params, fresh_url, png_bytes

from rrg_core.data.datasets import R2GenDataset, read_annotation
from rrg_core.observations import OBSERVATIONS
from rrg_core.store import Store, ViewImage, content_hash, open_store
from train.__main__ import main as train_main
from train.common.splits import read_training_records


@pytest.fixture(params=backend_params())
def store_url(request: pytest.FixtureRequest, tmp_path: Path):
    with fresh_url(request.param, tmp_path) as url:
        yield url


def add_phantom_study(store: Store, phantoms: Path, record) -> int:
    """Store one phantom study as the app would: its views as PNG, a pixel hash, a review."""
    pngs = [(phantoms / "images" / path).read_bytes() for path in record.image_paths]
    views = [ViewImage(name, png) for name, png in zip(("frontal", "lateral"), pngs, strict=True)]
    return store.add_study(content_hash(*pngs), views, source_name=f"{record.id}.png").id


def test_export_writes_a_data_set_the_readers_take(store_url: str, phantoms: Path, tmp_path: Path, capsys):
    records = read_annotation(phantoms)["train"][:3]
    with open_store(store_url) as store:
        ids = [add_phantom_study(store, phantoms, r) for r in records]
        store.save_review(ids[0], "dr_a", "draft report", {}, "draft")
        final = " Heart size is normal. No effusion. "
        store.save_review(ids[0], "dr_b", final, {"Cardiomegaly": 0}, "final", expected_version=1)
        store.save_review(ids[1], "dr_a", "Mild cardiomegaly.", {"Cardiomegaly": 1}, "final")
        store.save_review(ids[2], "dr_a", "unfinished", {}, "draft")  # not final: not exported
        hashes = {i: store.get_study(i).content_hash for i in ids}

    out = tmp_path / "corrections"
    assert train_main(["export-corrections", "--db", store_url, "--out", str(out)]) == 0
    assert "wrote 2 reviewed studies (4 images)" in capsys.readouterr().out

    splits = read_annotation(out)
    assert splits["val"] == [] and splits["test"] == []
    train = splits["train"]
    assert [r.id for r in train] == [f"review-{hashes[i][:16]}" for i in ids[:2]]
    first = train[0]
    assert first.report == "Heart size is normal. No effusion."
    assert first.image_paths == (f"{first.id}/0.png", f"{first.id}/1.png")
    assert first.extra["labels"] == {**dict.fromkeys(OBSERVATIONS), "Cardiomegaly": 0}
    assert (first.extra["reviewer"], first.extra["review_version"]) == ("dr_b", 2)
    assert first.extra["views"] == ["frontal", "lateral"]
    # The images are the stored PNGs, byte for byte.
    assert (out / "images" / first.image_paths[0]).read_bytes() == (
        phantoms / "images" / records[0].image_paths[0]
    ).read_bytes()
    labels = json.loads((out / "labels.json").read_text())
    assert labels[train[1].id]["Cardiomegaly"] == 1
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["studies"] == 2 and manifest["reviewers"] == ["dr_a", "dr_b"]
    assert "@" not in manifest["source"] or "***" in manifest["source"]  # no password in the file

    # The project's dataset reader loads the images; DCRRG's --extra reader takes the folder.
    dataset = R2GenDataset(out, "train", views=2)
    item = dataset[0]
    assert item["images"].shape[:2] == (2, 1) and item["report"] == first.report
    train_records, _val, _spec, paths = read_training_records(phantoms, out)
    assert [r.id for r in train_records[-2:]] == [r.id for r in train]
    assert all(path.is_file() for path in paths[first.id])

    with open_store(store_url) as store:
        exported = [e for e in store.audit_events() if e.action == "corrections.exported"]
        assert exported and exported[0].detail["studies"] == 2


def test_export_of_drafts_and_of_everything(store_url: str, tmp_path: Path):
    with open_store(store_url) as store:
        study = store.add_study(content_hash(b"s"), [ViewImage("frontal", png_bytes())])
        store.save_review(study.id, "dr_a", "a draft", {}, "draft")
    for status, count in (("draft", 1), ("any", 1)):
        out = tmp_path / status
        assert (
            train_main(["export-corrections", "--db", store_url, "--out", str(out), "--status", status]) == 0
        )
        assert len(read_annotation(out)["train"]) == count


def test_nothing_to_export_and_an_occupied_folder_are_clear_errors(store_url: str, tmp_path: Path, capsys):
    with open_store(store_url):
        pass
    out = tmp_path / "out"
    assert train_main(["export-corrections", "--db", store_url, "--out", str(out)]) == 2
    assert "has no final reviews: nothing to export" in capsys.readouterr().err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no staging left behind
    out.mkdir()
    (out / "something.txt").write_text("keep me")
    assert train_main(["export-corrections", "--db", store_url, "--out", str(out)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (out / "something.txt").read_text() == "keep me"
