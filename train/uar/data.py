"""UAR training data: the records, the vocabulary, uint8 image caches and the model's input form.

Every study's views are decoded once and kept in memory as uint8 (the DCRRG image cache of
:func:`train.common.data.cache_images`): training views at ``train_resize`` (random crops of
``image_size`` are cut from them when the preset asks for crops), validation views at ``image_size``
(evaluation resizes straight to the input size, paper sec. 4.1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rrg_core.data.datasets import DatasetSpec, StudyRecord, reviewed_labels
from rrg_core.data.vocab import Vocabulary
from rrg_core.labeler import label_report
from rrg_core.models.preprocess import Preprocess
from rrg_core.observations import OBSERVATIONS, positive_flags
from train.common.data import cache_images, pad_ids
from train.common.splits import read_training_records

if TYPE_CHECKING:
    from train.uar.presets import UARPreset

logger = logging.getLogger(__name__)

# Grey [0, 1] -> [-1, 1]: the dVAE is trained here, so no ImageNet statistics are involved.
MEAN, STD = 0.5, 0.5


@dataclass(frozen=True)
class ImageSettings:
    """How views become model input: side ``size``, training cache side ``train_resize`` (random
    crops when larger), ``channels`` (grey repeated when 3), normalised with mean = std = 0.5."""

    size: int
    train_resize: int
    channels: int

    @classmethod
    def of_preset(cls, preset: UARPreset) -> ImageSettings:
        """The preset's settings; Table 2's "base" row feeds an ImageNet CNN, which takes 3 channels
        (its EfficientNet-Lite0 weights expect mean = std = 0.5, the normalisation used here)."""
        channels = 3 if preset.ablation == "base" else preset.channels
        return cls(preset.image_size, preset.train_resize, channels)

    @property
    def random_crop(self) -> bool:
        """Whether training crops at random (and so the dVAE tokens of a view change per draw)."""
        return self.train_resize > self.size

    def preprocess(self, views: int | None) -> Preprocess:
        """What a checkpoint records so that evaluation prepares images the same way."""
        return Preprocess(image_size=self.size, channels=self.channels, mean=(MEAN,), std=(STD,), views=views)

    def to_input(
        self, cached: Tensor, device: torch.device, generator: torch.Generator | None = None
    ) -> Tensor:
        """uint8 (B, V, S, S) -> normalised float (B, V, C, size, size) on ``device``.

        A cache larger than ``size`` is cropped at a random position per study (with ``generator``)
        or, without a generator, at the centre.
        """
        side = cached.shape[-1]
        if side > self.size:
            cached = _crop(cached, self.size, generator)
        images = cached.to(device, non_blocking=True).float().div_(255.0).unsqueeze(2)
        images = (images - MEAN) / STD
        return images.expand(-1, -1, self.channels, -1, -1) if self.channels > 1 else images


def _crop(cached: Tensor, size: int, generator: torch.Generator | None) -> Tensor:
    slack = cached.shape[-1] - size
    if generator is None:
        start = slack // 2
        return cached[..., start : start + size, start : start + size]
    offsets = torch.randint(0, slack + 1, (cached.shape[0], 2), generator=generator).tolist()
    return torch.stack(
        [study[..., y : y + size, x : x + size] for study, (y, x) in zip(cached, offsets, strict=True)]
    )


@dataclass
class UARData:
    """The training and validation studies in memory (record order), with their encoded reports."""

    vocab: Vocabulary
    spec: DatasetSpec
    train_records: list[StudyRecord]
    val_records: list[StudyRecord]
    train_images: Tensor  # uint8 (N, V, train_resize, train_resize)
    val_images: Tensor  # uint8 (M, V, size, size)
    report_ids: list[list[int]]
    val_report_ids: list[list[int]]
    image: ImageSettings
    positive_sets: Tensor | None = None  # bool (N, 14): each training study's positive observations
    val_positive_sets: Tensor | None = None  # bool (M, 14): the same for the validation studies
    # (N, V, h, w): the training studies' LSU tokens, when this run's codebook fit already made them
    train_tokens: Tensor | None = None

    def findings(self, val: bool = False) -> Tensor:
        """bool (N, 14): the positive observations of the training (or validation) studies."""
        cached = self.val_positive_sets if val else self.positive_sets
        if cached is not None:
            return cached
        return positive_sets(self.val_records if val else self.train_records)

    def same_findings(self, index: Tensor) -> Tensor | None:
        """(B, B) bool: studies of ``index`` with the same positive-observation set ("No Finding"
        included), which eq 10 must not push apart; None when the labels are not known."""
        if self.positive_sets is None:
            return None
        sets = self.positive_sets[index]
        return (sets[:, None, :] == sets[None, :, :]).all(dim=-1)

    def train_views(self) -> Tensor:
        """Every training view on its own, uint8 (N * V, S, S): the dVAE's training set."""
        return self.train_images.flatten(0, 1)

    def reports(self, index: Tensor, val: bool = False) -> Tensor:
        """The encoded reports of ``index`` as one right-padded (B, T) tensor."""
        source = self.val_report_ids if val else self.report_ids
        return pad_ids([source[i] for i in index.tolist()], self.vocab.pad_id)


def prepare(
    data: Path,
    image: ImageSettings,
    vocab: Vocabulary | None,
    workers: int,
    show: bool,
    extra: Path | None = None,
) -> UARData:
    """Read the train and val splits (and ``extra``'s train split, e.g. exported corrections), build
    the vocabulary (unless resuming with one), encode the reports and cache the images."""
    train, val, spec, image_paths = read_training_records(data, extra)
    if vocab is None:
        vocab = Vocabulary.build((r.report for r in train), spec.min_count)
    logger.info(
        "vocabulary: %d tokens; %d training and %d validation studies", len(vocab), len(train), len(val)
    )

    def paths(records: list[StudyRecord]) -> list[list[Path]]:
        return [image_paths[r.id] for r in records]

    return UARData(
        vocab=vocab, spec=spec, train_records=train, val_records=val,
        train_images=cache_images(paths(train), image.train_resize, spec.views, workers, show),
        val_images=cache_images(paths(val), image.size, spec.views, workers, show),
        report_ids=[vocab.encode(r.report, spec.max_length) for r in train],
        val_report_ids=[vocab.encode(r.report, spec.max_length) for r in val], image=image,
        positive_sets=positive_sets(train), val_positive_sets=positive_sets(val),
    )  # fmt: skip


def positive_sets(records: list[StudyRecord]) -> Tensor:
    """bool (N, 14): the positive observations of each record, a reviewer's labels (``--extra``
    corrections) where given, else the labeler's reading of the report. The same rule as the
    evaluation's retrieval relevance (:data:`rrg_core.evaluation.RETRIEVAL_RELEVANCE`)."""
    reviewed = reviewed_labels(records)
    rows = []
    for record in records:
        labels = reviewed.get(record.id) or label_report(record.report).labels
        rows.append(positive_flags(labels))
    return torch.tensor(rows, dtype=torch.bool).reshape(len(records), len(OBSERVATIONS))
