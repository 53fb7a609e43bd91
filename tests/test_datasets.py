"""The R2Gen-layout reader and Dataset, on tiny IU and MIMIC layouts and the real shared reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from rrg_core.data import datasets
from rrg_core.data.datasets import (
    IU_XRAY,
    MIMIC_CXR,
    R2GenDataset,
    StudyRecord,
    collate_studies,
    detect_spec,
    read_annotation,
)
from rrg_core.data.transforms import build_transform, uar_transform_config
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import DatasetError, ImageLoadError, ImagesMissingError

REPORTS = [
    "The heart is normal in size. The lungs are clear.",
    "No pleural effusion or pneumothorax. Heart size is normal.",
    "Mild cardiomegaly. Small left pleural effusion.",
    "The lungs are clear. No focal consolidation.",
    "Heart size normal. Lungs are clear bilaterally. No effusion.",
]


def _png(path: Path, shade: int, size: tuple[int, int] = (96, 96)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, color=shade).save(path)


def _write(root: Path, annotation: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotation.json").write_text(json.dumps(annotation), encoding="utf-8")
    return root


@pytest.fixture
def iu_dir(tmp_path: Path) -> Path:
    """IU layout: 5 studies, two 96x96 PNG views each; train entries carry phantom ``labels``."""
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for i, (split, report) in enumerate(zip(["train"] * 3 + ["val", "test"], REPORTS, strict=True)):
        study = f"CXR{i}_IM-{i}"
        entry = {
            "id": study,
            "report": report,
            "image_path": [f"{study}/0.png", f"{study}/1.png"],
            "split": split,
        }
        if split == "train":
            entry["labels"] = {"Cardiomegaly": 1 if i == 2 else 0}
        splits[split].append(entry)
        for view in (0, 1):
            _png(tmp_path / "iu" / "images" / study / f"{view}.png", 40 * i + 20 * view)
    return _write(tmp_path / "iu", splits)


@pytest.fixture
def mimic_dir(tmp_path: Path) -> Path:
    """MIMIC layout: pNN/pNNNNNNNN/sNNNNNNNN/<dicom>.jpg, one path per entry except one with two."""
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for i, split in enumerate(["train", "train", "val", "test"]):
        folder = f"p1{i}/p1{i}00003{i}/s5041426{i}"
        paths = [f"{folder}/{i:02d}aa804e-bde0afdd.jpg"] + ([f"{folder}/lateral.jpg"] if i == 0 else [])
        splits[split].append(
            {
                "id": f"{i:02d}aa804e",
                "study_id": 50414260 + i,
                "subject_id": 10000030 + i,
                "report": REPORTS[i],
                "image_path": paths,
                "split": split,
            }
        )
        for path in paths:
            target = tmp_path / "mimic" / "images" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (96, 96), color=30 * i).save(target, format="JPEG")
    return _write(tmp_path / "mimic", splits)


@pytest.fixture
def vocab(iu_dir: Path) -> Vocabulary:
    return Vocabulary.build((r.report for r in read_annotation(iu_dir)["train"]), min_count=1)


def test_specs_state_the_papers_defaults():
    assert (IU_XRAY.min_count, IU_XRAY.max_length, IU_XRAY.views) == (3, 60, 2)
    assert (MIMIC_CXR.min_count, MIMIC_CXR.max_length, MIMIC_CXR.views) == (10, 100, 1)


def test_read_annotation_iu(iu_dir: Path):
    splits = read_annotation(iu_dir)
    assert {s: len(r) for s, r in splits.items()} == {"train": 3, "val": 1, "test": 1}
    first = splits["train"][0]
    assert first == StudyRecord(
        "CXR0_IM-0",
        REPORTS[0],
        ("CXR0_IM-0/0.png", "CXR0_IM-0/1.png"),
        "train",
        {"labels": {"Cardiomegaly": 0}},
    )
    assert read_annotation(iu_dir / "annotation.json") == splits
    assert detect_spec(r for records in splits.values() for r in records) is IU_XRAY


def test_read_annotation_mimic_keeps_unknown_keys(mimic_dir: Path):
    splits = read_annotation(mimic_dir)
    record = splits["train"][0]
    assert record.extra == {"study_id": 50414260, "subject_id": 10000030}
    assert len(record.image_paths) == 2 and record.image_paths[0].startswith("p10/")
    assert detect_spec(splits["train"]) is MIMIC_CXR


def test_iu_dataset_items(iu_dir: Path, vocab: Vocabulary):
    transform = build_transform(uar_transform_config(False), train=False)
    dataset = R2GenDataset(iu_dir, "train", vocab, transform=transform)
    assert len(dataset) == 3 and dataset.spec is IU_XRAY and dataset.max_length == 60
    item = dataset[2]
    assert item["id"] == "CXR2_IM-2" and item["report"] == REPORTS[2]
    assert item["images"].shape == (2, 3, 112, 112) and item["images"].dtype == torch.float32
    assert item["report_ids"].dtype == torch.long
    assert item["report_ids"].tolist() == vocab.encode(REPORTS[2], 60)
    assert item["extra"] == {"labels": {"Cardiomegaly": 1}}
    # The two views are different files (different shades), in annotation order.
    assert not torch.equal(item["images"][0], item["images"][1])


def test_mimic_dataset_uses_the_first_view_only(mimic_dir: Path, vocab: Vocabulary):
    dataset = R2GenDataset(mimic_dir, "train", vocab, max_length=8)
    assert dataset.spec is MIMIC_CXR and dataset.views == 1
    item = dataset[0]
    assert item["images"].shape == (1, 1, 96, 96)  # no transform: the loader's (1, H, W)
    assert item["image_paths"] == (read_annotation(mimic_dir)["train"][0].image_paths[0],)
    assert len(item["report_ids"]) <= 8 and item["report_ids"][-1] == vocab.eos_id


def test_collate_pads_and_masks(iu_dir: Path, vocab: Vocabulary):
    transform = build_transform(uar_transform_config(True), train=True)
    dataset = R2GenDataset(iu_dir, "train", vocab, transform=transform)
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=dataset.collate)))
    assert batch["images"].shape == (3, 2, 3, 112, 112)
    lengths = [len(vocab.encode(r, 60)) for r in REPORTS[:3]]
    assert batch["report_ids"].shape == (3, max(lengths))
    assert batch["report_lengths"].tolist() == lengths
    assert batch["report_mask"].sum(dim=1).tolist() == lengths
    assert (batch["report_ids"][~batch["report_mask"]] == vocab.pad_id).all()
    assert batch["id"] == [r.id for r in dataset.records] and len(batch["extra"]) == 3


def test_collate_without_images_or_vocab():
    items = [
        {"id": "a", "report": "x", "image_paths": (), "extra": {}, "report_ids": torch.tensor([1, 5, 2])},
        {"id": "b", "report": "y", "image_paths": (), "extra": {}, "report_ids": torch.tensor([1, 2])},
    ]
    batch = collate_studies(items, pad_id=9)
    assert batch["report_ids"].tolist() == [[1, 5, 2], [1, 2, 9]]
    assert "images" not in batch
    with pytest.raises(DatasetError, match="empty batch"):
        collate_studies([])


def test_text_only_never_touches_images(iu_dir: Path, vocab: Vocabulary, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was loaded")

    monkeypatch.setattr(datasets, "load_image", refuse)
    for path in (iu_dir / "images").rglob("*.png"):
        path.unlink()
    dataset = R2GenDataset(iu_dir, "val", vocab, load_images=False)
    item = dataset[0]
    assert "images" not in item and item["report"] == REPORTS[3]
    assert "images" not in dataset.collate([item])


def test_missing_image_files_are_listed_at_build(iu_dir: Path):
    (iu_dir / "images" / "CXR1_IM-1" / "1.png").unlink()
    (iu_dir / "images" / "CXR2_IM-2" / "0.png").unlink()
    with pytest.raises(ImagesMissingError) as caught:
        R2GenDataset(iu_dir, "train")
    message = str(caught.value)
    assert "2 of 6 image files are missing" in message
    assert "study CXR1_IM-1" in message and "CXR1_IM-1/1.png" in message and "CXR2_IM-2/0.png" in message
    assert "'train'" in message
    R2GenDataset(iu_dir, "val")  # other splits are unaffected


def test_no_images_folder(iu_dir: Path):
    shutil.rmtree(iu_dir / "images")
    with pytest.raises(ImagesMissingError) as caught:
        R2GenDataset(iu_dir, "test")
    message = str(caught.value)
    assert "has no images/ directory" in message and "come without images" in message
    assert f"python -m train phantoms --from-reports {iu_dir / 'annotation.json'} --out DIR" in message
    assert "iu_xray.zip" in message


def test_too_few_views(mimic_dir: Path):
    with pytest.raises(DatasetError, match=r"fewer than 2 image paths.*views=1"):
        R2GenDataset(mimic_dir, "val", views=2)


def test_unreadable_image_names_the_study(iu_dir: Path):
    (iu_dir / "images" / "CXR3_IM-3" / "0.png").write_bytes(b"not a png")
    dataset = R2GenDataset(iu_dir, "val")
    with pytest.raises(ImageLoadError, match="CXR3_IM-3"):
        dataset[0]


def test_unknown_split(iu_dir: Path):
    with pytest.raises(DatasetError, match=r"no split 'dev' \(has: train, val, test\)"):
        R2GenDataset(iu_dir, "dev", load_images=False)


def _entry(**overrides) -> dict:
    return {"id": "s1", "report": "Clear.", "image_path": ["s1/0.png"], "split": "train", **overrides}


@pytest.mark.parametrize("key", ["id", "report", "image_path"])
def test_missing_required_key(tmp_path: Path, key: str):
    second = _entry(id="s2")
    del second[key]
    root = _write(tmp_path / "d", {"train": [_entry(), second]})
    with pytest.raises(DatasetError) as caught:
        read_annotation(root)
    message = str(caught.value)
    assert "annotation.json" in message and "split 'train'" in message and "entry 1" in message
    assert f"missing required key {key!r}" in message
    if key != "id":
        assert "id 's2'" in message


@pytest.mark.parametrize(
    ("annotation", "words"),
    [
        ([], "expected an object of splits"),
        ({"train": {"id": "x"}}, "split 'train' must be a list"),
        ({"val": ["text"]}, "split 'val', entry 0: expected an object"),
        ({"train": [_entry(image_path="s1/0.png")]}, "'image_path' must be a list"),
        ({"train": [_entry(report=None)]}, "'report' must be a string"),
        ({"train": [_entry(image_path=["../secret.png"])]}, "must stay inside images/"),
    ],
)
def test_malformed_structure(tmp_path: Path, annotation, words):
    root = _write(tmp_path / "d", annotation)
    with pytest.raises(DatasetError, match=words):
        read_annotation(root)


def test_malformed_json_names_file_and_line(tmp_path: Path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "annotation.json").write_text('{"train": [\n  {"id": "a",\n  "report": }\n]}', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"annotation\.json: malformed JSON at line 3"):
        read_annotation(root)


def test_no_annotation_file(tmp_path: Path):
    with pytest.raises(DatasetError, match="no annotation file"):
        read_annotation(tmp_path)


def test_shared_iu_xray_reports(iu_xray_dir: Path):
    splits = read_annotation(iu_xray_dir)
    assert {s: len(r) for s, r in splits.items()} == {"train": 2069, "val": 296, "test": 590}
    assert detect_spec(splits["train"]) is IU_XRAY
    vocab = Vocabulary.build((r.report for r in splits["train"]), min_count=IU_XRAY.min_count)
    dataset = R2GenDataset(iu_xray_dir, "test", vocab, load_images=False, annotation=splits)
    item = dataset[0]
    assert item["report"] and item["report_ids"][0] == vocab.bos_id and len(item["report_ids"]) <= 60
    with pytest.raises(ImagesMissingError) as caught:
        R2GenDataset(iu_xray_dir, "train", vocab, annotation=splits)
    message = str(caught.value)
    assert "README.md" in message and "no images/ directory" in message
    assert f"python -m train phantoms --from-reports {iu_xray_dir / 'annotation.json'} --out DIR" in message
    assert "iu_xray.zip" in message


def test_reviewed_labels_are_read_by_study_and_checked(tmp_path):
    from rrg_core.data.datasets import reviewed_labels

    entries = [
        {"id": "a", "report": "x", "image_path": ["a.png"], "labels": {"Pleural Effusion": 1, "edema": "-1"}},
        {"id": "b", "report": "y", "image_path": ["b.png"]},
    ]
    (tmp_path / "annotation.json").write_text(json.dumps({"train": entries}))
    found = reviewed_labels(read_annotation(tmp_path)["train"])
    assert list(found) == ["a"]
    assert (found["a"]["Pleural Effusion"], found["a"]["Edema"], found["a"]["Fracture"]) == (1, -1, None)
    entries[0]["labels"] = {"Nonsense": 1}
    (tmp_path / "annotation.json").write_text(json.dumps({"train": entries}))
    with pytest.raises(DatasetError, match="study 'a': unknown observation 'Nonsense'"):
        reviewed_labels(read_annotation(tmp_path)["train"])


def test_reviewed_labels_win_over_the_labeler_for_training():
    from train.dcrrg.data import StudyLabels
    from train.dcrrg.prepare import apply_reviewed_labels

    labels = {"a": StudyLabels({"Edema": 0}, {"Edema": ["no edema"]}), "b": StudyLabels({"Edema": 1}, {})}
    apply_reviewed_labels(labels, {"a": {"Edema": 1}, "unknown": {"Edema": 1}})
    assert labels["a"].labels == {"Edema": 1} and labels["a"].sentences == {"Edema": ["no edema"]}
    assert labels["b"].labels == {"Edema": 1} and set(labels) == {"a", "b"}
