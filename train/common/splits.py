"""The training and validation studies of an R2Gen-layout data set (plus extra training data, such
as exported corrections), checked for images before any training starts."""

from __future__ import annotations

import logging
from pathlib import Path

from rrg_core.data.datasets import (
    IMAGES_DIR,
    DatasetSpec,
    StudyRecord,
    check_images,
    detect_spec,
    read_annotation,
)
from rrg_core.errors import DatasetError, ImagesMissingError

logger = logging.getLogger(__name__)


def split_with_images(
    root: Path, splits: dict[str, list[StudyRecord]], split: str, views: int, required: bool
) -> list[StudyRecord]:
    """``split``'s records of ``splits`` (read from ``root``) after checking their images exist; an
    empty split is refused when ``required``."""
    records = splits.get(split, [])
    if required and not records:
        raise DatasetError(f"{root}: split {split!r} has no studies (has: {', '.join(splits) or 'none'})")
    if records:
        if not (root / IMAGES_DIR).is_dir():
            raise ImagesMissingError(f"{root} has no {IMAGES_DIR}/ folder: no images to train on")
        check_images(records, root / IMAGES_DIR, views, f"{root} split {split!r}")
    return records


def read_training_records(
    data: Path, extra: Path | None
) -> tuple[list[StudyRecord], list[StudyRecord], DatasetSpec, dict[str, list[Path]]]:
    """Training records (data's train split, then extra's train split), validation records, spec, paths.

    ``paths`` maps study id -> absolute image paths (extra data keeps its own images/ folder).
    """
    if not data.is_dir():
        raise DatasetError(f"data folder {data} not found")
    splits = read_annotation(data)
    spec = detect_spec(r for records in splits.values() for r in records)
    train = split_with_images(data, splits, "train", spec.views, required=True)
    val = split_with_images(data, splits, "val", spec.views, required=False)
    paths = {r.id: [data / IMAGES_DIR / p for p in r.image_paths] for r in train + val}
    if extra is not None:
        if not extra.is_dir():
            raise DatasetError(f"--extra folder {extra} not found")
        # Only the extra set's train split: its val/test studies must stay unseen.
        extra_train = split_with_images(extra, read_annotation(extra), "train", 1, required=True)
        clashes = {r.id for r in extra_train} & set(paths)
        if clashes:
            raise DatasetError(f"--extra repeats study ids of --data (e.g. {sorted(clashes)[0]})")
        paths.update({r.id: [extra / IMAGES_DIR / p for p in r.image_paths] for r in extra_train})
        train = train + extra_train
        logger.info("extra data: %d training studies from %s", len(extra_train), extra)
    return train, val, spec, paths
