"""Does a model read the image? Distinct drafts, and clinical efficacy with the images swapped.

A report generator that writes one fluent report for every study can score a respectable BLEU on a
data set where most reports say "normal": the field's most common silent failure. Two figures show
it at once, for models and baselines alike:

- **distinct drafts**: how many different (cleaned) reports a model wrote for the studies;
- **swapped-image CE F1 micro**: every study is paired with *another* study's images (a seeded
  derangement of the split, no study keeps its own) and the drafts are scored against the studies'
  own references. A model that reads the image loses most of its CE F1 there; one that ignores the
  image loses nothing (the most-frequent-report baseline is the reference point).

Nothing here reads files: records and images come in as arguments, as in :mod:`rrg_core.evaluation`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch

from rrg_core.data.datasets import StudyRecord
from rrg_core.data.reports import clean_report
from rrg_core.errors import RRGError
from rrg_core.evaluation import EvaluationResult, Labeler, ReportGenerator, generate_reports
from rrg_core.labeler import label_report
from rrg_core.metrics import clinical_efficacy

#: The seed of the derangement that pairs studies with other studies' images.
SHUFFLE_SEED = 0


@dataclass(frozen=True)
class ImageDependence:
    """The image-dependence figures of one model on one split (module docstring)."""

    num_studies: int
    distinct_drafts: int
    ce_micro_f1: float
    swapped_ce_micro_f1: float
    seed: int = SHUFFLE_SEED

    @property
    def distinct_share(self) -> float:
        """Distinct drafts per study (1.0: every study got its own report)."""
        return self.distinct_drafts / self.num_studies if self.num_studies else 0.0

    @property
    def ce_kept(self) -> float | None:
        """Swapped-image CE F1 over own-image CE F1: near 1 for a model that ignores the image."""
        return self.swapped_ce_micro_f1 / self.ce_micro_f1 if self.ce_micro_f1 > 0 else None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready figures, with the derived share and ratio."""
        return {**asdict(self), "distinct_share": self.distinct_share, "ce_kept": self.ce_kept}


def derangement(count: int, seed: int = SHUFFLE_SEED) -> list[int]:
    """A seeded permutation of ``range(count)`` with no fixed point: position i takes the images of
    study ``result[i]`` != i (a random cycle through all studies). Identity for fewer than 2."""
    if count < 2:
        return list(range(count))
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    result = [0] * count
    for position, study in enumerate(order):
        result[study] = order[(position + 1) % count]
    return result


def distinct_drafts(texts: Iterable[str]) -> int:
    """The number of different reports, compared in their cleaned (R2Gen) form."""
    return len({clean_report(text) for text in texts})


def measure_image_dependence(
    generator: ReportGenerator,
    records: Sequence[StudyRecord],
    result: EvaluationResult,
    swapped_images: Iterable[torch.Tensor] | None,
    *,
    batch_size: int = 16,
    labeler: Labeler = label_report,
    progress: bool = True,
    seed: int = SHUFFLE_SEED,
) -> ImageDependence:
    """Score ``generator`` again with ``swapped_images`` (the stacks of :func:`derangement` order,
    made with ``seed``) and compare with ``result``, its evaluation on the studies' own images."""
    if result.num_studies != len(records) or [s.id for s in result.studies] != [r.id for r in records]:
        raise RRGError("the evaluation result does not cover these studies in this order")
    generated, _ = generate_reports(
        generator, records, swapped_images, batch_size=batch_size, progress=progress,
        desc=f"{generator.name} (swapped images)",
    )  # fmt: skip
    by_id = {g.id: g.text for g in generated}
    uncertain_as = result.clinical.uncertain_as  # the same rule as the own-image figure
    references = [dict(labeler(s.reference).labels) for s in result.studies]
    swapped = [dict(labeler(clean_report(by_id[r.id])).labels) for r in records]
    return ImageDependence(
        num_studies=len(records),
        distinct_drafts=distinct_drafts(s.generated for s in result.studies),
        ce_micro_f1=result.clinical.micro.f1,
        swapped_ce_micro_f1=clinical_efficacy(references, swapped, uncertain_as=uncertain_as).micro.f1,
        seed=seed,
    )
