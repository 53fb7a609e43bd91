"""CheXpert-style image-only label CSVs: DCRRG Step 1's "extra uni-modal data".

A CSV has a ``Path`` column and the 14 observation columns named as in
:data:`rrg_core.observations.OBSERVATIONS`, with values 1.0, 0.0, -1.0 or blank
(unmentioned); other columns (Sex, Age, Frontal/Lateral, AP/PA) are ignored.
Paths are relative to an image root: CheXpert's start with the data set folder
name ("CheXpert-v1.0-small/train/patient00001/..."), so the root is that
folder's parent.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from rrg_core.data.images import load_image
from rrg_core.errors import DatasetError, ImageLoadError, ImagesMissingError, RRGError
from rrg_core.observations import OBSERVATIONS, LabelDict, parse_label

logger = logging.getLogger(__name__)

PATH_COLUMN = "Path"
_SHOW_MISSING = 5


@dataclass(frozen=True)
class ChexpertRecord:
    """One CSV row: an image path (relative to the image root) and its 14 labels."""

    path: str
    labels: LabelDict
    line: int  # line in the CSV, for messages


def read_chexpert_csv(csv_path: str | os.PathLike) -> list[ChexpertRecord]:
    """Read a CheXpert-style CSV into records, in file order.

    Raises :class:`DatasetError` naming the file for missing columns (all listed),
    and the file and line for a row with no path or an unknown label value.
    """
    path = Path(csv_path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            _check_columns(path, reader.fieldnames)
            records = [_read_row(path, reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    logger.info("read %s: %d images", path, len(records))
    return records


def _check_columns(path: Path, fieldnames: Sequence[str] | None) -> None:
    if not fieldnames:
        raise DatasetError(f"{path}: empty file, expected a header with {PATH_COLUMN!r} and the observations")
    present = {name.strip() for name in fieldnames}
    missing = [name for name in (PATH_COLUMN, *OBSERVATIONS) if name not in present]
    if missing:
        raise DatasetError(f"{path}: missing columns: {', '.join(missing)}")


def _read_row(path: Path, line: int, row: dict[str, str | None]) -> ChexpertRecord:
    row = {(key or "").strip(): value for key, value in row.items()}
    image = (row.get(PATH_COLUMN) or "").strip()
    if not image:
        raise DatasetError(f"{path}, line {line}: no image path in column {PATH_COLUMN!r}")
    labels: LabelDict = {}
    for name in OBSERVATIONS:
        value = row.get(name)
        try:
            labels[name] = parse_label(value)
        except RRGError:
            raise DatasetError(
                f"{path}, line {line}: {name} value {value!r} is not one of 1.0, 0.0, -1.0 or blank"
            ) from None
    return ChexpertRecord(image, labels, line)


def label_vector(labels: LabelDict) -> torch.Tensor:
    """Labels as a float (14,) vector in OBSERVATIONS order.

    1 positive, 0 negative or unmentioned, -1 uncertain (the papers' targets, uncertain marked).

    Training targets are ``vector.clamp(min=0)``; mask uncertain ones with ``vector >= 0``.
    """
    values = [float(labels.get(name)) if labels.get(name) is not None else 0.0 for name in OBSERVATIONS]
    return torch.tensor(values, dtype=torch.float32)


class ChexpertDataset(Dataset[tuple[torch.Tensor, LabelDict | torch.Tensor]]):
    """Items ``(image, labels)``: the transformed image tensor and a label dict or :func:`label_vector`.

    Image files are checked when the dataset is built (one ``stat`` each) unless
    ``check_files=False``.
    """

    def __init__(
        self,
        records: Sequence[ChexpertRecord],
        image_root: str | os.PathLike,
        *,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        label_format: Literal["dict", "vector"] = "dict",
        check_files: bool = True,
    ) -> None:
        if label_format not in ("dict", "vector"):
            raise RRGError(f"label_format must be 'dict' or 'vector', got {label_format!r}")
        self.records = list(records)
        self.image_root = Path(image_root)
        self.transform = transform
        self.label_format = label_format
        if check_files:
            self._check_files()

    @classmethod
    def from_csv(
        cls, csv_path: str | os.PathLike, image_root: str | os.PathLike, **kwargs
    ) -> ChexpertDataset:
        """Read ``csv_path`` and build the dataset over ``image_root``."""
        return cls(read_chexpert_csv(csv_path), image_root, **kwargs)

    def _check_files(self) -> None:
        if not self.image_root.is_dir():
            raise ImagesMissingError(f"image root {self.image_root} is not a directory")
        missing = [r for r in self.records if not (self.image_root / r.path).is_file()]
        if missing:
            shown = "; ".join(f"line {r.line}: {self.image_root / r.path}" for r in missing[:_SHOW_MISSING])
            raise ImagesMissingError(
                f"{len(missing)} of {len(self.records)} image files are missing under {self.image_root} "
                f"(paths are relative to the folder that holds the data set folder): {shown}"
                + (" ..." if len(missing) > _SHOW_MISSING else "")
            )

    @property
    def labels(self) -> list[LabelDict]:
        """Each item's label dict, in order (what :class:`BalancedObservationSampler` takes)."""
        return [record.labels for record in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, LabelDict | torch.Tensor]:
        record = self.records[index]
        try:
            image = load_image(self.image_root / record.path).tensor()
        except ImageLoadError as error:
            raise ImageLoadError(f"line {record.line} ({record.path}): {error}") from error
        if self.transform is not None:
            image = self.transform(image)
        if self.label_format == "vector":
            return image, label_vector(record.labels)
        return image, dict(record.labels)
