"""Report generation data sets in the R2Gen layout: the annotation reader and a torch Dataset.

A data set folder holds ``annotation.json``, ``{"train": [...], "val": [...],
"test": [...]}`` with entries ``{"id", "report", "image_path", "split", ...}``,
and ``images/`` with the files that ``image_path`` names relative to it. IU X-ray
gives two views per study (frontal, lateral); MIMIC-CXR paths look like
``p10/p10000032/s50414267/<dicom id>.jpg`` and the frontal view comes first.

Keys beyond the required ones (``labels`` from the phantom generator, MIMIC's
``study_id``...) are kept in :attr:`StudyRecord.extra` and passed through.
Datasets know nothing of models: they give images, raw reports and report ids.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch.utils.data import Dataset

from rrg_core.data.images import load_image
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import DatasetError, ImageLoadError, ImagesMissingError, RRGError
from rrg_core.observations import validate_labels

logger = logging.getLogger(__name__)

ANNOTATION_FILE = "annotation.json"
IMAGES_DIR = "images"
REQUIRED_KEYS: tuple[str, ...] = ("id", "report", "image_path")
_KNOWN_KEYS = frozenset((*REQUIRED_KEYS, "split"))
_MIMIC_PATH = re.compile(r"^p\d{2}/")
_SHOW_MISSING = 5


@dataclass(frozen=True)
class DatasetSpec:
    """Per-data-set defaults, as the papers state them."""

    name: str
    title: str
    min_count: int  # vocabulary: keep words seen at least this often in training reports
    max_length: int  # report ids, <bos> and <eos> included
    views: int  # images per study given to the model
    real_images_hint: str  # how a user gets the real images (for error messages)


IU_XRAY = DatasetSpec(
    "iu_xray", "IU X-ray", 3, 60, 2, "put the real IU X-ray images (R2Gen's iu_xray.zip) under images/"
)
MIMIC_CXR = DatasetSpec(
    "mimic_cxr",
    "MIMIC-CXR",
    10,
    100,
    1,
    "put the MIMIC-CXR-JPG images (pNN/pNNNNNNNN/sNNNNNNNN/...) under images/",
)
DATASET_SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (IU_XRAY, MIMIC_CXR)}


@dataclass(frozen=True)
class StudyRecord:
    """One annotation entry: a study's report and its image paths (relative to ``images/``)."""

    id: str
    report: str
    image_paths: tuple[str, ...]
    split: str
    extra: dict[str, Any] = field(default_factory=dict)


def detect_spec(records: Iterable[StudyRecord]) -> DatasetSpec:
    """MIMIC-CXR when every study's first image path starts with ``pNN/``, else IU X-ray."""
    flags = {bool(_MIMIC_PATH.match(r.image_paths[0])) for r in records if r.image_paths}
    if flags == {True, False}:
        raise DatasetError("the image paths mix the MIMIC-CXR layout (pNN/...) with another; pass the spec")
    return MIMIC_CXR if flags == {True} else IU_XRAY


def annotation_path(path_or_dir: str | os.PathLike) -> Path:
    """The annotation file: ``path_or_dir`` itself, or ``annotation.json`` inside it."""
    path = Path(path_or_dir)
    if path.is_dir():
        path = path / ANNOTATION_FILE
    if not path.is_file():
        raise DatasetError(f"no annotation file at {path}")
    return path


def read_annotation(path_or_dir: str | os.PathLike) -> dict[str, list[StudyRecord]]:
    """Read an R2Gen ``annotation.json`` into ``{split: [StudyRecord, ...]}``, in file order.

    Raises :class:`DatasetError` naming the file (and line, or split, entry and key)
    for malformed JSON, a wrong structure or a missing required key.
    """
    path = annotation_path(path_or_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(
            f"{path}: malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}"
        ) from error
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: expected an object of splits (train, val, test), got {type(data).__name__}"
        )
    splits = {split: _read_split(path, split, entries) for split, entries in data.items()}
    logger.info("read %s: %s", path, ", ".join(f"{s} {len(r)}" for s, r in splits.items()))
    return splits


def reviewed_labels(records: Iterable[StudyRecord]) -> dict[str, dict[str, int | None]]:
    """The ``labels`` that records carry (a reviewer's corrections, as ``python -m train
    export-corrections`` writes them in each entry), by study id; records without them are left out.

    Raises :class:`DatasetError` naming the study for labels that are not the 14 observations' values.
    """
    found = {}
    for record in records:
        if record.extra.get("labels") is None:
            continue
        try:
            labels = validate_labels(record.extra["labels"])
        except RRGError as error:
            raise DatasetError(f"study {record.id!r}: {error}") from error
        found[record.id] = {k: None if v is None else int(v) for k, v in labels.items()}
    return found


def _read_split(path: Path, split: str, entries: object) -> list[StudyRecord]:
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: split {split!r} must be a list of entries, got {type(entries).__name__}")
    records = [_read_entry(path, split, index, entry) for index, entry in enumerate(entries)]
    mismatched = sum(1 for entry in entries if entry.get("split", split) != split)
    if mismatched:
        # The top-level key is what R2Gen's loaders go by, so it wins.
        logger.warning("%s: %d entries under %r name another split; using %r", path, mismatched, split, split)
    return records


def _read_entry(path: Path, split: str, index: int, entry: object) -> StudyRecord:
    where = f"{path}: split {split!r}, entry {index}"
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: expected an object, got {type(entry).__name__}")
    if "id" in entry:
        where += f" (id {entry['id']!r})"
    for key in REQUIRED_KEYS:
        if key not in entry:
            raise DatasetError(f"{where}: missing required key {key!r}")
    if not isinstance(entry["id"], str | int) or str(entry["id"]) == "":
        raise DatasetError(f"{where}: 'id' must be a non-empty string")
    if not isinstance(entry["report"], str):
        raise DatasetError(f"{where}: 'report' must be a string")
    paths = entry["image_path"]
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise DatasetError(f"{where}: 'image_path' must be a list of relative paths")
    for image in paths:
        pure = PurePosixPath(image)
        if pure.is_absolute() or ".." in pure.parts:
            raise DatasetError(f"{where}: image path {image!r} must stay inside images/")
    extra = {key: value for key, value in entry.items() if key not in _KNOWN_KEYS}
    return StudyRecord(str(entry["id"]), entry["report"], tuple(paths), split, extra)


def _no_images_message(root: Path, annotation: Path, spec: DatasetSpec) -> str:
    readme = root / "README.md"
    source = f"see the folder's README.md, {readme}" if readme.is_file() else f"only {annotation} is there"
    return (
        f"{root} has no {IMAGES_DIR}/ directory: these reports come without images ({source}). "
        f"To train on images, render IU-Phantom (synthetic radiographs drawn from these reports) with "
        f"`python -m train phantoms --from-reports {annotation} --out DIR` and use DIR, "
        f"or {spec.real_images_hint}."
    )


def check_images(records: Sequence[StudyRecord], images_dir: Path, views: int, what: str) -> None:
    """Check that each study's first ``views`` image files exist (one ``stat`` each).

    Raises :class:`ImagesMissingError` listing the first few missing files and the count.
    """
    short = [r.id for r in records if len(r.image_paths) < views]
    if short:
        raise DatasetError(
            f"{what}: {len(short)} studies have fewer than {views} image paths "
            f"(e.g. {', '.join(short[:_SHOW_MISSING])}); pass views=1 to use one view"
        )
    wanted = [(r.id, p) for r in records for p in r.image_paths[:views]]
    missing = [(study, p) for study, p in wanted if not (images_dir / p).is_file()]
    if missing:
        shown = "; ".join(f"study {study}: {images_dir / p}" for study, p in missing[:_SHOW_MISSING])
        raise ImagesMissingError(
            f"{what}: {len(missing)} of {len(wanted)} image files are missing under {images_dir}: {shown}"
            + (" ..." if len(missing) > _SHOW_MISSING else "")
        )


class R2GenDataset(Dataset[dict[str, Any]]):
    """One split of an R2Gen-layout data set.

    Items are dicts: ``id``, ``report`` (raw text), ``image_paths``, ``extra``;
    ``report_ids`` (LongTensor, ``vocab.encode(report, max_length)``) when a vocab
    is given; ``images`` (float tensor (V, C, H, W), each view through
    ``transform``) when ``load_images``. With ``load_images=False`` the image
    folder is never touched, so text-only work runs where there are no images.
    Image files are checked when the dataset is built, not mid-epoch.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        vocab: Vocabulary | None = None,
        *,
        max_length: int | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        load_images: bool = True,
        views: int | None = None,
        spec: DatasetSpec | None = None,
        images_dir: str | os.PathLike | None = None,
        annotation: Mapping[str, list[StudyRecord]] | None = None,
    ) -> None:
        self.annotation_path = annotation_path(root)
        self.root = self.annotation_path.parent
        splits = annotation if annotation is not None else read_annotation(self.annotation_path)
        if split not in splits:
            raise DatasetError(f"{self.annotation_path}: no split {split!r} (has: {', '.join(splits)})")
        self.split = split
        self.records: list[StudyRecord] = list(splits[split])
        self.spec = spec or detect_spec(r for records in splits.values() for r in records)
        self.vocab = vocab
        self.max_length = max_length or self.spec.max_length
        self.views = views or self.spec.views
        self.transform = transform
        self.load_images = load_images
        self.images_dir = Path(images_dir) if images_dir is not None else self.root / IMAGES_DIR
        if load_images:
            self._check_images()

    def _check_images(self) -> None:
        if not self.images_dir.is_dir():
            raise ImagesMissingError(_no_images_message(self.root, self.annotation_path, self.spec))
        check_images(
            self.records, self.images_dir, self.views, f"{self.annotation_path} split {self.split!r}"
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        item: dict[str, Any] = {
            "id": record.id,
            "report": record.report,
            "image_paths": record.image_paths[: self.views],
            "extra": record.extra,
        }
        if self.vocab is not None:
            ids = self.vocab.encode(record.report, self.max_length)
            item["report_ids"] = torch.tensor(ids, dtype=torch.long)
        if self.load_images:
            item["images"] = torch.stack([self._load_view(record, p) for p in item["image_paths"]])
        return item

    def _load_view(self, record: StudyRecord, relative: str) -> torch.Tensor:
        try:
            image = load_image(self.images_dir / relative).tensor()
        except ImageLoadError as error:
            raise ImageLoadError(f"study {record.id}: {error}") from error
        return self.transform(image) if self.transform is not None else image

    def collate(self, batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """:func:`collate_studies` with this dataset's pad id (pass as a DataLoader's ``collate_fn``)."""
        return collate_studies(batch, pad_id=self.vocab.pad_id if self.vocab is not None else 0)


def collate_studies(batch: Sequence[dict[str, Any]], pad_id: int = 0) -> dict[str, Any]:
    """Batch dataset items.

    Lists for ``id``, ``report``, ``image_paths``, ``extra``; ``images`` stacked to
    (B, V, C, H, W); ``report_ids`` right-padded with ``pad_id`` to (B, L) with
    ``report_mask`` (bool, True on real tokens) and ``report_lengths`` (B,).
    """
    if not batch:
        raise DatasetError("cannot collate an empty batch")
    out: dict[str, Any] = {
        key: [item[key] for item in batch] for key in ("id", "report", "image_paths", "extra")
    }
    if "images" in batch[0]:
        out["images"] = torch.stack([item["images"] for item in batch])
    if "report_ids" in batch[0]:
        sequences = [item["report_ids"] for item in batch]
        lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
        ids = torch.full((len(batch), int(lengths.max())), pad_id, dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, : len(sequence)] = sequence
        out["report_ids"] = ids
        out["report_mask"] = torch.arange(ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        out["report_lengths"] = lengths
    return out
