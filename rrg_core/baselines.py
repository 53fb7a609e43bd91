"""Two training-free reference points for report generation, fitted on the training split.

- :class:`MostFrequentReport` writes the same report for every study: the most frequent cleaned
  training report. On IU X-ray that is a normal chest, so it shows how far "always normal" goes on
  the NLG metrics and how little it gives on clinical efficacy.
- :class:`NearestNeighbourReport` copies the training report of the most similar training study,
  with similarity from a fixed, model-free image representation (:func:`pixel_features`), so it
  needs no training and shows what plain retrieval reaches.

Both implement :class:`~rrg_core.evaluation.ReportGenerator` and return cleaned (R2Gen-form) text.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.nn import functional

from rrg_core.data.datasets import StudyRecord
from rrg_core.data.reports import clean_report
from rrg_core.errors import RRGError
from rrg_core.evaluation import GeneratedReport
from rrg_core.retrieval.search import top_k

logger = logging.getLogger(__name__)

FEATURE_SIDE = 32
"""Side of the grey thumbnail each view is reduced to."""


class MostFrequentReport:
    """The most frequent cleaned training report, for every study.

    Reports are compared after :func:`clean_report`, so spelling variants that differ only in case,
    punctuation or spacing count as one. Ties in frequency go to the alphabetically first cleaned
    text, so the choice does not depend on the order of the annotation file.
    """

    name = "MostFrequentReport"
    needs_images = False  # evaluate_model then does not load the studies' images for it

    def __init__(self, report: str, count: int = 0, total: int = 0) -> None:
        self.report = clean_report(report)
        if not self.report:
            raise RRGError("the most-frequent-report baseline needs a non-empty report")
        self.count = count
        self.total = total

    @classmethod
    def fit(cls, train_records: Sequence[StudyRecord]) -> MostFrequentReport:
        """Count the cleaned training reports (empty ones are ignored) and keep the mode."""
        counts = Counter(text for text in (clean_report(r.report) for r in train_records) if text)
        if not counts:
            raise RRGError("no non-empty training report to take the most frequent one from")
        report, count = min(counts.items(), key=lambda item: (-item[1], item[0]))
        logger.info("most frequent training report (%d of %d): %s", count, len(train_records), report)
        return cls(report, count, len(train_records))

    def generate(
        self, records: Sequence[StudyRecord], images: list[torch.Tensor] | None = None
    ) -> list[GeneratedReport]:
        """The mode for every record (images are ignored)."""
        return [GeneratedReport(record.id, self.report) for record in records]


def pixel_features(images: torch.Tensor, views: int = 2, side: int = FEATURE_SIDE) -> torch.Tensor:
    """A study's model-free image vector: each view as a ``side`` x ``side`` grey thumbnail, standardised.

    Args:
        images: the study's views, (V, C, H, W) (or (V, H, W)); channels are averaged to grey.
        views: how many views the vector holds; a study with fewer repeats its last view (so one-view
            studies still compare with two-view ones), extra views are dropped.
        side: thumbnail side.

    Returns:
        float32 (views * side * side,): per view, area-averaged thumbnail minus its mean, divided by
        its standard deviation (so exposure and contrast do not drive the similarity), concatenated
        in view order (frontal, then lateral in IU X-ray).
    """
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[0] == 0:
        raise RRGError(f"expected a study's views as (V, C, H, W), got shape {tuple(images.shape)}")
    # numpy from here on: these are small single images, and torch's multi-threaded kernels (a
    # channel mean, an "area" resize) cost 50x more per call when their threads compete for a busy CPU.
    pixels = images.detach().cpu().float().numpy()
    grey = pixels[:, 0] if pixels.shape[1] == 1 else pixels.mean(axis=1)
    if grey.shape[0] < views:
        grey = np.concatenate([grey, np.repeat(grey[-1:], views - grey.shape[0], axis=0)])
    # PIL's box filter averages every pixel into the thumbnail (no aliasing of fine texture such as
    # noise), as torch's "area" interpolation does.
    thumbs = np.stack(
        [
            np.asarray(Image.fromarray(np.ascontiguousarray(view)).resize((side, side), Image.Resampling.BOX))
            for view in grey[:views]
        ]
    ).reshape(views, -1)
    thumbs = thumbs - thumbs.mean(axis=1, keepdims=True)
    small = torch.from_numpy(thumbs / np.maximum(thumbs.std(axis=1, ddof=1, keepdims=True), 1e-6)).float()
    return small.flatten()


class NearestNeighbourReport:
    """The training report of the study whose images look most alike (cosine of pixel features).

    Fitting stores every training study's :func:`pixel_features`, centred on their mean: without
    centring every chest radiograph resembles every other (the shared anatomy dominates the cosine),
    with it the similarity compares how studies differ from the average study. The query is centred
    with the same training mean. Ties go to the earlier training study. No ``image_embedding`` is
    returned: pixel features are no joint image-report space, so image-to-report P@K does not apply.
    """

    name = "NearestNeighbourReport"

    def __init__(
        self,
        features: torch.Tensor,
        reports: Sequence[str],
        ids: Sequence[str] | None = None,
        *,
        views: int = 2,
        side: int = FEATURE_SIDE,
    ) -> None:
        if features.ndim != 2 or features.shape[0] == 0 or features.shape[0] != len(reports):
            raise RRGError(
                f"need one feature row per training report, got {tuple(features.shape)} and {len(reports)}"
            )
        if features.shape[1] != views * side * side:
            raise RRGError(f"features have {features.shape[1]} values, expected {views} x {side} x {side}")
        self.views, self.side = views, side
        self.mean = features.mean(dim=0)
        self.bank = functional.normalize(features - self.mean, dim=1)
        self.reports = [clean_report(text) for text in reports]
        self.ids = list(ids) if ids is not None else [str(i) for i in range(len(reports))]

    @classmethod
    def fit(
        cls,
        train_records: Sequence[StudyRecord],
        train_images: Iterable[torch.Tensor],
        *,
        views: int = 2,
        side: int = FEATURE_SIDE,
    ) -> NearestNeighbourReport:
        """Compute the training bank from the training studies and their images (one (V, C, H, W) each).

        Training studies with an empty report are left out (they would be copied as an empty report).
        """
        rows, reports, ids = [], [], []
        for record, images in zip(train_records, train_images, strict=True):
            if clean_report(record.report):
                rows.append(pixel_features(images, views, side))
                reports.append(record.report)
                ids.append(record.id)
        if not rows:
            raise RRGError("no training study with a non-empty report to retrieve from")
        logger.info("nearest-neighbour bank: %d training studies", len(rows))
        return cls(torch.stack(rows), reports, ids, views=views, side=side)

    def neighbours(self, images: Sequence[torch.Tensor]) -> list[int]:
        """Index (into the training bank) of the most similar training study for each query study."""
        queries = torch.stack([pixel_features(stack, self.views, self.side) for stack in images])
        # The retrieval search breaks ties towards the earlier training study.
        _, rows = top_k(functional.normalize(queries - self.mean, dim=1), self.bank, 1)
        return rows[:, 0].tolist()

    def generate(
        self, records: Sequence[StudyRecord], images: list[torch.Tensor] | None
    ) -> list[GeneratedReport]:
        """The nearest training study's cleaned report for each record; ``images`` are required."""
        if images is None or len(images) != len(records):
            raise RRGError(f"{self.name} needs the images of every study (one (V, C, H, W) tensor each)")
        if not records:
            return []
        best = self.neighbours(images)
        return [GeneratedReport(r.id, self.reports[i]) for r, i in zip(records, best, strict=True)]
