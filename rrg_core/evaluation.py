"""Model-agnostic evaluation of report generators: NLG, clinical efficacy, AUROC, retrieval P@K, speed.

A model takes part through the :class:`ReportGenerator` protocol; :func:`evaluate_model` runs it
over a split (timing the generation) and :func:`evaluate_reports` scores what it wrote. Nothing
here reads or writes files: records and images come in as arguments.

What is scored, and how:

- Texts: references and hypotheses are both cleaned with :func:`~rrg_core.data.reports.clean_report`
  (the R2Gen form the papers score), then BLEU-1..4, METEOR, ROUGE-L and CIDEr come from one
  :func:`~rrg_core.metrics.nlg_scores` call (METEOR starts one JVM per call).
- Clinical efficacy: the labeler labels the cleaned reference and the cleaned hypothesis (the same
  form on both sides, so a difference in labels is a difference in content, not in punctuation);
  micro, macro (the papers' tables) and example-based P/R/F1 over the 14 observations and over the
  CheXbert five; uncertain labels counted as ``uncertain_as`` says (negative by default), recorded.
- AUROC (DCRRG Table 6's form), when every generated report carries per-observation
  probabilities: target = the reference label is positive (uncertain and unmentioned are not);
  observations with one class only among the studies are skipped; the mean is over the rest.
- Image-to-report Precision@{1,2,5,10} (DCRRG Table 2's form), when every generated report carries
  an image embedding and the generator can embed reports: each study's image embedding queries the
  evaluated studies' (cleaned) reference reports by cosine similarity. Relevance is
  :data:`RETRIEVAL_RELEVANCE`: a retrieved report is correct when its positive-label set (the
  labeler's positive observations, "No Finding" included) equals the query study's. This is the
  category match of CheXpert-5x200 carried over to multi-label studies; "the study's own report"
  would cap P@K at 1/K and say little for K > 1. The same embeddings give report-to-image P@K (each
  reference report queries the studies' image embeddings, same relevance) and UAR's alignment score
  (footnote 3, :func:`~rrg_core.metrics.alignment_score`: the share of matched image-report pairs
  whose cosine similarity, min-max normalised over all pairs, exceeds 0.5).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from rrg_core.data.datasets import StudyRecord
from rrg_core.data.reports import clean_report
from rrg_core.errors import RRGError
from rrg_core.labeler import label_report
from rrg_core.metrics import (
    CHEXBERT_FIVE,
    NLG_METRICS,
    AurocSummary,
    ClinicalEfficacy,
    alignment_score,
    auroc_per_observation,
    chance_precision,
    clinical_efficacy,
    nlg_scores,
    precision_at_ks,
)
from rrg_core.metrics.ranking import to_numpy
from rrg_core.observations import OBSERVATIONS, LabelDict, labels_to_json, positive_flags

logger = logging.getLogger(__name__)

PRECISION_KS: tuple[int, ...] = (1, 2, 5, 10)
RETRIEVAL_RELEVANCE = "same_positive_label_set"
"""The name of the P@K relevance rule (see the module docstring); it is written into every result."""


@dataclass(frozen=True)
class GeneratedReport:
    """One generated report: the study id, the text, and what the model can add for the metrics.

    ``probabilities``: observation name -> probability of positive (DCRRG Step 1), for AUROC.
    ``image_embedding``: the study's image embedding in the joint space (DCCLIP, UAR CRA), for P@K.
    """

    id: str
    text: str
    probabilities: dict[str, float] | None = None
    image_embedding: list[float] | None = None


@runtime_checkable
class ReportGenerator(Protocol):
    """What a model implements to be evaluated (and compared) here.

    ``images`` holds, per record, the study's views as loaded (float32 in [0, 1], (V, 1, H, W), the
    frontal view first), or is None for generators that use no images; each generator applies its
    own transform (resize, normalisation) and moves tensors to its device. Generators with a joint
    image-report space may also define ``embed_reports(texts: Sequence[str]) -> Tensor`` ((N, d),
    texts in the cleaned R2Gen form) for image-to-report retrieval, and generators that ignore images
    may set ``needs_images = False`` so that :func:`evaluate_model` does not load them.
    """

    name: str

    def generate(
        self, records: Sequence[StudyRecord], images: list[torch.Tensor] | None
    ) -> list[GeneratedReport]:
        """One report per record, in record order."""
        ...


Labeler = Callable[[str], Any]  # returns an object with ``.labels`` (a LabelDict), as label_report does


@dataclass(frozen=True)
class StudyOutcome:
    """Per-study detail of an evaluation (for generated.jsonl and error analysis)."""

    id: str
    reference: str
    generated: str
    reference_labels: dict[str, int | None]
    generated_labels: dict[str, int | None]


@dataclass(frozen=True)
class EvaluationResult:
    """The scores of one model on one set of studies."""

    model: str
    num_studies: int
    nlg: dict[str, float]
    clinical: ClinicalEfficacy
    auroc: AurocSummary | None = None
    precision_at_k: dict[int, float] | None = None
    generation_seconds: float | None = None
    studies: list[StudyOutcome] = field(default_factory=list, repr=False)
    report_to_image_precision_at_k: dict[int, float] | None = None
    alignment: float | None = None
    chance_precision: float | None = None
    clinical_5: ClinicalEfficacy | None = None  # the same over the CheXbert five

    @property
    def studies_per_second(self) -> float | None:
        """Studies generated per second (generation time only), or None when not timed."""
        if not self.generation_seconds:
            return None
        return self.num_studies / self.generation_seconds

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready scores (NaN becomes None; per-study details are left out)."""
        auroc = None
        if self.auroc is not None:
            auroc = {
                "mean": finite_or_none(self.auroc.mean),
                "num_defined": self.auroc.num_defined,
                # Observations with one class only are skipped (their AUROC is undefined).
                "per_observation": {
                    name: value for name, value in self.auroc.per_observation.items() if not math.isnan(value)
                },
                "curves": self.auroc.curves,
            }
        retrieval = None
        if self.precision_at_k is not None:
            retrieval = {
                "relevance": RETRIEVAL_RELEVANCE,
                **{f"P@{k}": value for k, value in self.precision_at_k.items()},
            }
            if self.report_to_image_precision_at_k is not None:
                reverse = self.report_to_image_precision_at_k
                retrieval["report_to_image"] = {f"P@{k}": value for k, value in reverse.items()}
            if self.chance_precision is not None:
                retrieval["chance"] = self.chance_precision  # a random ranking's P@K, any K
        return {
            "model": self.model,
            "num_studies": self.num_studies,
            "nlg": dict(self.nlg),
            "clinical_efficacy": self.clinical.to_dict(),
            "clinical_efficacy_5": None if self.clinical_5 is None else self.clinical_5.to_dict(),
            "uncertain_as": self.clinical.uncertain_as,
            "auroc": auroc,
            "retrieval": retrieval,
            "alignment_score": None if self.alignment is None else finite_or_none(self.alignment),
            "generation_seconds": self.generation_seconds,
            "studies_per_second": self.studies_per_second,
        }


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def evaluate_reports(
    records: Sequence[StudyRecord],
    generated: Sequence[GeneratedReport],
    *,
    metrics: Iterable[str] = NLG_METRICS,
    labeler: Labeler = label_report,
    report_embeddings: Any = None,
    generation_seconds: float | None = None,
    model: str = "model",
    uncertain_as: str = "negative",
) -> EvaluationResult:
    """Score generated reports against the records' reference reports.

    Args:
        records: the studies, with their reference reports.
        generated: one report per record (matched by id; order may differ).
        metrics: the NLG metrics to compute (leave out ``"METEOR"`` to skip Java).
        labeler: report text -> object with ``.labels``; the project labeler by default.
        report_embeddings: (N, d) embeddings of the cleaned reference reports, in record order; with
            every generated report's ``image_embedding`` they give image-to-report P@K.
        generation_seconds: how long generating took (for studies/s), measured by the caller.
        model: the model's name in the result.
        uncertain_as: how CE counts uncertain labels, ``"negative"`` (default) or ``"positive"``.

    Raises:
        RRGError: no records, missing/duplicate/extra ids, an empty reference, probabilities or
            embeddings given for some reports but not others.
    """
    if not records:
        raise RRGError("no studies to evaluate")
    ordered = _align(records, generated)
    references = [clean_report(r.report) for r in records]
    hypotheses = [clean_report(g.text) for g in ordered]
    nlg = nlg_scores(references, hypotheses, metrics=metrics)
    cache: dict[str, LabelDict] = {}  # baselines repeat texts; label each distinct text once

    def labels_of(text: str) -> LabelDict:
        if text not in cache:
            cache[text] = dict(labeler(text).labels)
        return cache[text]

    ref_labels = [labels_of(text) for text in references]
    hyp_labels = [labels_of(text) for text in hypotheses]
    outcomes = [
        StudyOutcome(r.id, ref, hyp, labels_to_json(rl), labels_to_json(hl))
        for r, ref, hyp, rl, hl in zip(records, references, hypotheses, ref_labels, hyp_labels, strict=True)
    ]
    return EvaluationResult(
        model=model,
        num_studies=len(records),
        nlg=nlg,
        clinical=clinical_efficacy(ref_labels, hyp_labels, uncertain_as=uncertain_as),
        clinical_5=clinical_efficacy(
            ref_labels, hyp_labels, observations=CHEXBERT_FIVE, uncertain_as=uncertain_as
        ),
        auroc=_auroc(ordered, ref_labels),
        generation_seconds=generation_seconds,
        studies=outcomes,
        **_retrieval(ordered, ref_labels, report_embeddings),
    )


def _align(records: Sequence[StudyRecord], generated: Sequence[GeneratedReport]) -> list[GeneratedReport]:
    """The generated reports in record order; every record must have exactly one."""
    by_id: dict[str, GeneratedReport] = {}
    for report in generated:
        if report.id in by_id:
            raise RRGError(f"two generated reports for study {report.id!r}")
        by_id[report.id] = report
    missing = [r.id for r in records if r.id not in by_id]
    if missing:
        raise RRGError(f"{len(missing)} studies have no generated report (e.g. {', '.join(missing[:5])})")
    if len(by_id) != len(records):
        extra = sorted(set(by_id) - {r.id for r in records})
        raise RRGError(f"generated reports for studies not evaluated: {', '.join(extra[:5])}")
    return [by_id[r.id] for r in records]


def _all_or_none(values: list[Any], what: str) -> bool:
    present = sum(value is not None for value in values)
    if 0 < present < len(values):
        raise RRGError(f"{what} given for {present} of {len(values)} generated reports; give all or none")
    return present == len(values)


def _positives(labels: Sequence[LabelDict]) -> np.ndarray:
    return np.array([positive_flags(row) for row in labels], dtype=float)


def _auroc(generated: list[GeneratedReport], ref_labels: list[LabelDict]) -> AurocSummary | None:
    if not _all_or_none([g.probabilities for g in generated], "probabilities"):
        return None
    # Score the observations every report gives a probability for (a model may cover a subset).
    names = [n for n in OBSERVATIONS if all(n in (g.probabilities or {}) for g in generated)]
    if not names:
        raise RRGError(f"the probabilities name none of the observations: {', '.join(OBSERVATIONS)}")
    columns = [OBSERVATIONS.index(n) for n in names]
    scores = np.array([[(g.probabilities or {})[n] for n in names] for g in generated], dtype=float)
    return auroc_per_observation(_positives(ref_labels)[:, columns], scores, names)


def _retrieval(
    generated: list[GeneratedReport], ref_labels: list[LabelDict], report_embeddings: Any
) -> dict[str, Any]:
    """Image-to-report and report-to-image P@K and the alignment score, as EvaluationResult fields
    (none of them without image and report embeddings)."""
    if not _all_or_none([g.image_embedding for g in generated], "image embeddings"):
        return {}
    if report_embeddings is None:
        logger.info("image embeddings but no report embeddings: P@K skipped")
        return {}
    images = _unit_rows([g.image_embedding for g in generated], "image embeddings")
    reports = _unit_rows(report_embeddings, "report embeddings")
    if images.shape != reports.shape:
        raise RRGError(f"image embeddings {images.shape} and report embeddings {reports.shape} differ")
    label_sets = _positives(ref_labels)
    relevance = (label_sets[:, None, :] == label_sets[None, :, :]).all(axis=2)  # symmetric
    ks = [k for k in PRECISION_KS if k <= len(generated)]
    similarity = images @ reports.T
    # A zero embedding has no direction: the alignment score refuses it, retrieval just ranks it last.
    zero = not np.all(np.linalg.norm(images, axis=1) > 0) or not np.all(np.linalg.norm(reports, axis=1) > 0)
    return {
        "precision_at_k": precision_at_ks(similarity, relevance, ks),
        "report_to_image_precision_at_k": precision_at_ks(similarity.T, relevance, ks),
        "chance_precision": chance_precision(relevance),
        "alignment": None if zero else alignment_score(images, reports),
    }


def _unit_rows(values: Any, what: str) -> np.ndarray:
    array = to_numpy(values)  # lists, numpy or torch (any device)
    if array.ndim != 2 or not np.all(np.isfinite(array)):
        raise RRGError(f"{what} must be a finite (N, d) matrix, got shape {array.shape}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms == 0, 1.0, norms)


def generate_reports(
    generator: ReportGenerator,
    records: Sequence[StudyRecord],
    images: Iterable[torch.Tensor] | None = None,
    *,
    batch_size: int = 16,
    progress: bool = True,
    desc: str | None = None,
) -> tuple[list[GeneratedReport], float]:
    """One report per record (in batches) and the seconds spent in ``generate`` alone.

    ``images`` yields one stack per record, in record order; it is read batch by batch, so a lazy
    iterable (a DataLoader with ``batch_size=None``) keeps a split out of memory. It is not read at
    all for a generator with ``needs_images = False``.
    """
    from rrg_core.progress import progress_bar

    if batch_size < 1:
        raise RRGError(f"batch size must be at least 1, got {batch_size}")
    stacks = iter(images) if images is not None and getattr(generator, "needs_images", True) else None
    generated: list[GeneratedReport] = []
    seconds = 0.0
    with progress_bar(total=len(records), unit="study", desc=desc or generator.name, show=progress) as bar:
        for start in range(0, len(records), batch_size):
            batch = list(records[start : start + batch_size])
            batch_images = None if stacks is None else list(itertools.islice(stacks, len(batch)))
            if batch_images is not None and len(batch_images) != len(batch):
                raise RRGError(f"got {len(records)} studies but fewer image stacks")
            began = time.perf_counter()
            with torch.inference_mode():
                out = generator.generate(batch, batch_images)
            seconds += time.perf_counter() - began
            if len(out) != len(batch):
                raise RRGError(f"{generator.name} returned {len(out)} reports for {len(batch)} studies")
            generated.extend(out)
            bar.update(len(batch))
    return generated, seconds


def evaluate_model(
    generator: ReportGenerator,
    records: Sequence[StudyRecord],
    images: Iterable[torch.Tensor] | None = None,
    *,
    batch_size: int = 16,
    metrics: Iterable[str] = NLG_METRICS,
    labeler: Labeler = label_report,
    progress: bool = True,
    uncertain_as: str = "negative",
) -> EvaluationResult:
    """Generate a report for every record (:func:`generate_reports`, timed) and score them with
    :func:`evaluate_reports`. studies/s counts only the time spent in ``generate``: image loading
    and report embedding are excluded."""
    generated, seconds = generate_reports(
        generator, records, images, batch_size=batch_size, progress=progress
    )
    report_embeddings = None
    embed = getattr(generator, "embed_reports", None)
    if callable(embed) and all(g.image_embedding is not None for g in generated):
        with torch.inference_mode():
            report_embeddings = embed([clean_report(r.report) for r in records])
    return evaluate_reports(
        records,
        generated,
        metrics=metrics,
        labeler=labeler,
        report_embeddings=report_embeddings,
        generation_seconds=seconds,
        model=generator.name,
        uncertain_as=uncertain_as,
    )
