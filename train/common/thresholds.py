"""Choosing a reader's per-observation thresholds after training, for either model: the preset's
``thresholds`` section (:class:`ThresholdSettings`) and :func:`choose`, which picks them from the
reader's probabilities and says what it did."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from rrg_core.metrics import auroc_per_observation, choose_micro_thresholds, choose_thresholds
from rrg_core.observations import OBSERVATIONS
from train.common.presets import check

RULES = {"observation": choose_thresholds, "micro": choose_micro_thresholds}


@dataclass(frozen=True, kw_only=True)
class ThresholdSettings:
    """How a reader's per-observation thresholds are chosen after training: ``rule`` "observation"
    (each column's F1 optimum) or "micro" (the micro F1 over all 14 together,
    :func:`rrg_core.metrics.choose_micro_thresholds`), on the ``studies`` "val" or "train+val"."""

    rule: Literal["observation", "micro"] = "observation"
    studies: Literal["val", "train+val"] = "val"

    def __post_init__(self) -> None:
        check(self.rule in RULES, f"rule must be observation or micro, got {self.rule!r}")
        check(self.studies in ("val", "train+val"), f"studies must be val or train+val, got {self.studies!r}")


def choose(
    val: tuple[Tensor, Tensor], rule: str = "observation", train: tuple[Tensor, Tensor] | None = None
) -> tuple[list[float], dict]:
    """Thresholds by ``rule`` (:data:`RULES`) on the validation studies, or on the training and
    validation studies together when ``train`` is given (more studies, steadier cuts for rare
    findings); and a summary with the validation AUROC.

    ``val`` and ``train`` are ((N, 14) probabilities, (N, 14) targets, NaN for uncertain labels, which
    neither choice nor AUROC counts).
    """
    probabilities, targets = val
    if train is not None:
        probabilities, targets = torch.cat([train[0], probabilities]), torch.cat([train[1], targets])
    thresholds = RULES[rule](probabilities, targets)
    summary = auroc_per_observation(val[1].numpy(), val[0].numpy())
    per = {k: (None if math.isnan(v) else round(v, 4)) for k, v in summary.per_observation.items()}
    return thresholds, {
        "val_auroc": per,
        "val_auroc_mean": None if math.isnan(summary.mean) else round(summary.mean, 4),
        "thresholds": dict(zip(OBSERVATIONS, (round(t, 4) for t in thresholds), strict=True)),
        "threshold_rule": f"{rule} F1 on {'train+val' if train is not None else 'val'}",
    }
