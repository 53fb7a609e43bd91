"""Turn a data folder (plus optional extra data) into :class:`TrainData` and the validation set."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rrg_core.data.chexpert import read_chexpert_csv
from rrg_core.data.datasets import DatasetSpec, StudyRecord, read_annotation, reviewed_labels
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import ImagesMissingError
from rrg_core.observations import OBSERVATIONS, Label
from train.common.data import cache_images
from train.common.distributed import DistInfo, barrier
from train.common.splits import read_training_records
from train.dcrrg.data import (
    StudyLabels,
    asserted,
    balance_weights,
    description,
    description_weights,
    label_studies,
    targets_and_keep,
    transform_config,
)  # fmt: skip
from train.dcrrg.presets import DCRRGPreset
from train.dcrrg.steps import TrainData

logger = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The training data, the validation studies (images + NaN-for-uncertain targets), the training
    studies' NaN-for-uncertain targets (for thresholds chosen on train+val), vocab, spec."""

    train: TrainData
    val_images: torch.Tensor
    val_targets: torch.Tensor
    train_targets: torch.Tensor  # (N, 14) of the paired training studies, NaN for uncertain
    vocab: Vocabulary
    spec: DatasetSpec
    train_records: list[StudyRecord]


def labels_for(records: list[StudyRecord], cache: Path, info: DistInfo) -> dict[str, StudyLabels]:
    """Label the studies once: rank 0 labels and writes the cache, the other ranks then read it."""
    if info.is_main:
        labels = label_studies(records, cache)
    barrier(info)
    return labels if info.is_main else label_studies(records, cache if cache.is_file() else None)


def apply_reviewed_labels(labels: dict[str, StudyLabels], reviewed: dict[str, dict[str, int | None]]) -> None:
    """A reviewer's corrected labels win over the labeler's reading of the same report: they are
    what the radiologist decided, and the report text may not say all of it. The attributed
    sentences (Step 3's targets) still come from the labeler."""
    for study_id, corrected in reviewed.items():
        if study_id in labels:
            labels[study_id] = StudyLabels(corrected, labels[study_id].sentences)
    if reviewed:
        logger.info("extra data: %d studies with reviewed labels", len(reviewed))


def nan_targets(studies: list[StudyLabels]) -> torch.Tensor:
    """(N, 14) 1/0 targets with NaN for uncertain labels (skipped by AUROC and threshold choice)."""
    rows = [
        [
            float("nan") if s.labels[k] == Label.UNCERTAIN else float(s.labels[k] == Label.POSITIVE)
            for k in OBSERVATIONS
        ]
        for s in studies
    ]
    return torch.tensor(rows).reshape(len(studies), len(OBSERVATIONS))


def _extra_chexpert(csv: Path, root: Path, size: int, views: int, workers: int, show: bool) -> tuple:
    records = read_chexpert_csv(csv)
    missing = [r.path for r in records if not (root / r.path).is_file()]
    if not records or missing:
        raise ImagesMissingError(
            f"--extra-chexpert {csv}: {len(missing)} of {len(records)} images missing under {root}"
        )
    studies = [StudyLabels({k: r.labels.get(k) for k in OBSERVATIONS}, {}) for r in records]
    images = cache_images([[root / r.path] for r in records], size, views, workers, show)
    return images, studies


def prepare(
    args: Any, preset: DCRRGPreset, run_dir: Path, vocab: Vocabulary | None, info: DistInfo
) -> Prepared:
    """Read, label, build the vocabulary (unless resuming with one), encode and cache the images."""
    train, val, spec, paths = read_training_records(args.data, args.extra)
    labels = labels_for(train + val, run_dir / "labels.json", info)
    if args.extra is not None:
        apply_reviewed_labels(labels, reviewed_labels(read_annotation(args.extra)["train"]))
    if vocab is None:
        vocab = Vocabulary.build((r.report for r in train), spec.min_count)
    logger.info("vocabulary: %d tokens (min count %d)", len(vocab), spec.min_count)
    studies = [labels[r.id] for r in train]
    desc_length = preset.model.description_max_length
    descriptions = [[vocab.encode(description(s, k), desc_length) for k in OBSERVATIONS] for s in studies]
    size, workers, show = preset.image_size, args.workers, info.is_main
    backbone = preset.model.image_encoder
    images = cache_images([paths[r.id] for r in train], size, spec.views, workers, show)
    val_images = cache_images([paths[r.id] for r in val], size, spec.views, workers, show)
    targets, keep = targets_and_keep(studies)
    balance = not args.no_balance
    extra_images = extra_targets = extra_weights = None
    if args.extra_chexpert is not None:
        extra_images, extra_studies = _extra_chexpert(
            args.extra_chexpert, args.extra_root, size, spec.views, workers, show
        )
        extra_targets, extra_keep = targets_and_keep(extra_studies)
        # The balancing weights are computed over the whole image side, reports and extra images together.
        every = balance_weights(torch.cat([targets, extra_targets]), torch.cat([keep, extra_keep]), balance)
        weights, extra_weights = every[: len(train)], every[len(train) :]
    else:
        weights = balance_weights(targets, keep, balance)
    data = TrainData(
        images=images, reports=[r.report for r in train],
        report_ids=[vocab.encode(r.report, spec.max_length) for r in train], descriptions=descriptions,
        targets=targets, states=asserted(studies), weights=weights, extra_images=extra_images,
        extra_targets=extra_targets, extra_weights=extra_weights, transform=transform_config(backbone, size),
        pad_id=vocab.pad_id,
        description_weights=description_weights(studies, preset.step3.balance),
    )  # fmt: skip
    val_targets = nan_targets([labels[r.id] for r in val])
    return Prepared(data, val_images, val_targets, nan_targets(studies), vocab, spec, train)
