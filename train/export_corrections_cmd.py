"""``python -m train export-corrections``: the radiologists' final reviews as an R2Gen-layout data set.

The folder it writes is what ``python -m train dcrrg --extra DIR`` takes as extra training data:

- ``annotation.json``: ``train`` holds every exported study (``val`` and ``test`` are empty, so
  no reviewed study leaks into an evaluation), each ``{"id", "report", "image_path", "split"}``
  plus ``labels`` (the reviewer's corrected labels, as the phantom generator writes them),
  ``views``, ``reviewer``, ``review_version``, ``reviewed_at`` and ``corrections`` (what the reviewer
  corrected in the model draft the review started from, :mod:`rrg_core.corrections`; null when it
  started from none);
- ``images/<id>/<k>.png``: the study's stored views, in view order;
- ``labels.json``: ``{id: labels}``, the corrected labels alone;
- ``export.json``: where and when the export came from.

Ids are ``review-`` plus the first 16 hex digits of the study's content hash: stable across
exports and unlike the ids of IU X-ray, MIMIC-CXR or phantom data sets. The folder is written
beside its destination and renamed into place at the end, so an interrupted export leaves none.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rrg_core.errors import RRGError

if TYPE_CHECKING:
    from rrg_core.store import ExportRecord, Store

# rrg_core.store (SQLAlchemy, Alembic) and rrg_core.data (torch) load when the command runs, so that
# `python -m train --help` stays quick.

logger = logging.getLogger(__name__)

ID_PREFIX = "review-"
LABELS_FILE = "labels.json"
MANIFEST_FILE = "export.json"
EXPORT_ACTOR = "export-corrections"


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    out: Path
    studies: int
    images: int


def study_key(record: ExportRecord) -> str:
    """The exported id of a study."""
    return ID_PREFIX + record.study.content_hash[:16]


def entry(record: ExportRecord, key: str) -> dict:
    """The annotation entry of one exported study."""
    review = record.review
    return {
        "id": key,
        "report": review.text.strip(),
        "image_path": [f"{key}/{image.position}.png" for image in record.images],
        "split": "train",
        "labels": review.labels,
        "views": [image.view for image in record.images],
        "reviewer": review.reviewer,
        "review_version": review.version,
        "reviewed_at": review.saved_at.isoformat(),
        "corrections": review.corrections,
    }


def export_corrections(store: Store, out: Path, status: str | None = "final") -> ExportSummary:
    """Write the reviews of ``store`` whose status is ``status`` (None: any) as a data set at ``out``.

    ``out`` must not exist or be an empty folder. Raises :class:`RRGError` when there is nothing to
    export (a training run on an empty extra set would fail later, less clearly).
    """
    from rrg_core.data.datasets import ANNOTATION_FILE

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RRGError(f"{out} already exists and is not an empty folder; choose a new --out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        entries, labels, images = _write(store, staging, status)
        if not entries:
            what = f"{status} reviews" if status else "reviews"
            raise RRGError(f"the review database {store.url} has no {what}: nothing to export")
        _write_json(staging / ANNOTATION_FILE, {"train": entries, "val": [], "test": []})
        _write_json(staging / LABELS_FILE, labels)
        manifest = {
            "source": store.url,
            "status": status or "any",
            "exported_at": datetime.now(UTC).isoformat(),
            "studies": len(entries),
            "images": images,
            "reviewers": sorted({e["reviewer"] for e in entries}),
        }
        _write_json(staging / MANIFEST_FILE, manifest)
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace a folder on every platform
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _audit(store, out, manifest)
    return ExportSummary(out, len(entries), images)


def _write(store: Store, folder: Path, status: str | None) -> tuple[list[dict], dict, int]:
    from rrg_core.data.datasets import IMAGES_DIR

    entries, labels, images = [], {}, 0
    for record in store.final_reviews(status):
        if not record.review.text.strip():
            logger.warning("study %d: its %s review is empty; skipped", record.study.id, record.review.status)
            continue
        key = study_key(record)
        study_dir = folder / IMAGES_DIR / key
        study_dir.mkdir(parents=True)
        for image in record.images:
            (study_dir / f"{image.position}.png").write_bytes(image.png)
            images += 1
        entries.append(entry(record, key))
        labels[key] = record.review.labels
    return entries, labels, images


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _audit(store: Store, out: Path, manifest: dict) -> None:
    """Record the export; a database that takes no writes (a read-only copy) still exports."""
    from rrg_core.store import StoreError

    try:
        store.record_event(EXPORT_ACTOR, "corrections.exported", None, {**manifest, "out": str(out)})
    except StoreError as error:
        logger.warning("the export was not recorded in the audit log: %s", error)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command."""
    parser = subparsers.add_parser(
        "export-corrections",
        help="write the final reviews of the review database as an R2Gen-layout training set",
    )
    parser.add_argument(
        "--db", help="database URL or SQLite file (default: the app's SQLite file in the user's data folder)"
    )
    parser.add_argument("--out", required=True, type=Path, help="new (or empty) folder to write")
    parser.add_argument(
        "--status", default="final", choices=["final", "draft", "any"],
        help="which reviews to export, by the status of their latest version (default: final)",
    )  # fmt: skip
    return parser


def run(args: argparse.Namespace) -> int:
    """Export, then print what was written and how to train on it."""
    from rrg_core.store import open_store

    with open_store(args.db) as store:
        summary = export_corrections(store, args.out, None if args.status == "any" else args.status)
    print(
        f"wrote {summary.studies} reviewed studies ({summary.images} images) to {summary.out}; "
        f"train on them with: python -m train dcrrg ... --extra {summary.out}"
    )
    return 0
