"""DCRRG training data: labels (cached), vocabulary, Step-3 descriptions and the in-memory image cache.

Every study's views are decoded and resized once to the model's input size and kept as uint8 in
memory (IU-Phantom at 224 px: 2,069 x 2 x 224^2 bytes, about 0.2 GB), so epochs never re-decode PNGs;
a batch is turned into normalised float tensors when it is drawn.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from rrg_core.data.datasets import StudyRecord
from rrg_core.data.transforms import TransformConfig, dcrrg_transform_config
from rrg_core.labeler import label_report, labeler_key
from rrg_core.observations import NO_FINDING, OBSERVATIONS, Label, binary_targets

logger = logging.getLogger(__name__)

_VERSION_KEY = "_labeler_version"  # stored beside the study ids in the label cache

# Table 7: an unmentioned observation is described by one fixed normal sentence (each is labelled
# negative for its observation by the project labeler, except "the lungs are clear.", which names no
# observation under CheXpert's lists; see the tests).
NORMAL_SENTENCES: dict[str, str] = {
    "Atelectasis": "there is no atelectasis.",
    "Cardiomegaly": "heart size is normal.",
    "Consolidation": "there is no focal consolidation.",
    "Edema": "there is no pulmonary edema.",
    "Enlarged Cardiomediastinum": "the mediastinal contours are normal.",
    "Fracture": "no acute bony fracture.",
    "Lung Lesion": "no suspicious pulmonary nodule or mass.",
    "Lung Opacity": "the lungs are clear.",
    NO_FINDING: "no acute cardiopulmonary abnormality.",
    "Pleural Effusion": "no pleural effusion.",
    "Pleural Other": "no pleural thickening.",
    "Pneumonia": "there is no evidence of pneumonia.",
    "Pneumothorax": "no pneumothorax.",
    "Support Devices": "no support devices are present.",
}


@dataclass(frozen=True)
class StudyLabels:
    """The labeler's output for one study: 14 label values and the attributed sentences."""

    labels: dict[str, int | None]
    sentences: dict[str, list[str]]


def label_studies(records: list[StudyRecord], cache: Path | None) -> dict[str, StudyLabels]:
    """Label every report, reusing ``cache`` (a JSON file keyed by study id and report text).

    The cache records the labeler's version (:func:`rrg_core.labeler.labeler_key`); a cache written by
    another version (or by one from before versions were recorded) is relabelled whole, never reused.
    """
    stored: dict = {}
    if cache is not None and cache.is_file():
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if stored.pop(_VERSION_KEY, None) != labeler_key():
            logger.info("labels: %s was made by another labeler version; relabelling", cache)
            stored = {}
    result, fresh = {}, 0
    for record in records:
        entry = stored.get(record.id)
        if entry is None or entry.get("report") != record.report:
            labelled = label_report(record.report)
            entry = {
                "report": record.report,
                "labels": {k: None if v is None else int(v) for k, v in labelled.labels.items()},
                "sentences": {k: list(v) for k, v in labelled.sentences.items()},
            }
            stored[record.id], fresh = entry, fresh + 1
        result[record.id] = StudyLabels(entry["labels"], entry["sentences"])
    if cache is not None and fresh:
        cache.write_text(json.dumps({_VERSION_KEY: labeler_key(), **stored}), encoding="utf-8")
    logger.info(
        "labels: %d studies (%d labelled now, %d from the cache)", len(records), fresh, len(records) - fresh
    )
    return result


def description(study: StudyLabels, observation: str) -> str:
    """Step-3 target for one (study, observation): the attributed sentences, else the normal sentence.

    No Finding of an abnormal study (unmentioned by the CheXpert rule) has no normal sentence that
    would be true, so its description is empty: the decoder learns to stop at once.
    """
    sentences = study.sentences.get(observation) or []
    if sentences:
        return " ".join(sentences)
    if observation == NO_FINDING and study.labels.get(NO_FINDING) != Label.POSITIVE:
        return ""
    return NORMAL_SENTENCES[observation]


def targets_and_keep(studies: list[StudyLabels]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 14) targets (1 positive, 0 negative/unmentioned) and keep masks (False: uncertain)."""
    pairs = [binary_targets(s.labels) for s in studies]
    return torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])


def transform_config(backbone: str, size: int) -> TransformConfig:
    """The backbone's normalisation (rrg_core.data.transforms) at the preset's input size."""
    return replace(dcrrg_transform_config(backbone, train=True), resize=size)


def to_model_input(cached: torch.Tensor, config: TransformConfig, device: torch.device) -> torch.Tensor:
    """uint8 (B, V, S, S) -> normalised float (B, V, 3, S, S) on ``device`` (grey repeated to RGB)."""
    images = cached.to(device, non_blocking=True).float().div_(255.0).unsqueeze(2).expand(-1, -1, 3, -1, -1)
    mean = torch.tensor(config.mean, device=device).view(1, 1, -1, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 1, -1, 1, 1)
    return (images - mean) / std


def balance_weights(targets: torch.Tensor, keep: torch.Tensor, balance: bool) -> torch.Tensor:
    """Per-label loss weights (N, 14) for Step 1; 0 drops an uncertain label.

    Balanced (the default, Table 5's "balancing"): positives of observation k weigh n_k / (2 p_k),
    negatives n_k / (2 (n_k - p_k)), so both classes of every observation carry equal total weight,
    and every observation the same total, the expectation of re-sampling each observation to 50/50
    and mixing the 14 evenly, but with one encoder pass per study for all 14 labels.
    ``balance=False``: every kept label weighs 1 (plain shuffled studies).
    """
    kept = keep.float()
    if not balance:
        return kept
    positives = (targets * kept).sum(0)
    eligible = kept.sum(0)
    negatives = eligible - positives
    w_pos = torch.where(positives > 0, eligible / (2 * positives.clamp(min=1)), torch.zeros_like(eligible))
    w_neg = torch.where(
        positives > 0, eligible / (2 * negatives.clamp(min=1)), torch.ones_like(eligible)
    )  # one class only: it cannot be balanced, so it keeps weight 1
    return kept * torch.where(targets > 0, w_pos, w_neg)


def asserted(studies: list[StudyLabels]) -> torch.Tensor:
    """(N, 14) 0/1: the report asserts the observation (positive or uncertain; a hedge still names
    it). The labels a label-conditioned decoder is trained to write for, and what Step 3's balance
    counts as a mentioned finding."""
    rows = [[s.labels.get(k) in (Label.POSITIVE, Label.UNCERTAIN) for k in OBSERVATIONS] for s in studies]
    return torch.tensor(rows, dtype=torch.long).reshape(len(studies), len(OBSERVATIONS))


def description_weights(studies: list[StudyLabels], balance: bool) -> torch.Tensor:
    """Step-3 sampling weights (N, 14) of the (study, observation) pairs.

    Findings are rare: in a phantom or IU study most of the 14 observations are unmentioned, so
    uniform pairs teach the decoder little but each observation's normal sentence, whatever the
    image shows. Balanced, the pairs whose observation the report mentions as present or possible
    weigh as much in total as the rest, per observation (the weights of :func:`balance_weights`);
    ``balance=False``: every pair weighs 1.
    """
    mentioned = asserted(studies).float()
    return balance_weights(mentioned, torch.ones_like(mentioned, dtype=torch.bool), balance)


OBSERVATION_COUNT = len(OBSERVATIONS)
