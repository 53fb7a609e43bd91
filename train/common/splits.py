"""One split of an R2Gen-layout data set, checked for images before any training starts."""

from __future__ import annotations

from pathlib import Path

from rrg_core.data.datasets import IMAGES_DIR, StudyRecord, check_images
from rrg_core.errors import DatasetError, ImagesMissingError


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
