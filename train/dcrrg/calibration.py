"""After DCRRG Steps 1 and 2: the classifier's probabilities on the calibration studies, the
per-observation thresholds chosen on them (stored in the model, so Table 7's labels use them) and the
validation AUROC.

Step 2 moves the encoder under the Step-1 heads, so thresholds chosen after Step 1 are stale after
it: both steps calibrate, and the last one's thresholds are the model's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rrg_core.data.transforms import TransformConfig
from rrg_core.metrics import auroc_per_observation, choose_micro_thresholds, choose_thresholds
from rrg_core.models.dcrrg import DCRRG
from rrg_core.observations import NUM_OBSERVATIONS, OBSERVATIONS
from train.dcrrg.data import to_model_input

RULES = {"observation": choose_thresholds, "micro": choose_micro_thresholds}


@torch.no_grad()
def image_probabilities(
    model: DCRRG, cached: Tensor, transform: TransformConfig, device: torch.device
) -> Tensor:
    """Step-1 probabilities (N, 14) of cached studies, in batches, eval mode."""
    model.eval()
    out = [
        model.clip.observation_probabilities(to_model_input(cached[i : i + 32], transform, device))
        .float()
        .cpu()
        for i in range(0, len(cached), 32)
    ]
    return torch.cat(out) if out else torch.empty(0, NUM_OBSERVATIONS)


def calibrate(
    model: DCRRG,
    val: tuple[Tensor, Tensor],
    transform: TransformConfig,
    device: torch.device,
    rule: str = "observation",
    train: tuple[Tensor, Tensor] | None = None,
) -> dict:
    """Thresholds by ``rule`` (:data:`RULES`) on the validation studies, or on the training and
    validation studies together when ``train`` is given (more studies, steadier cuts for rare
    findings), stored in the model; and the validation AUROC.

    ``val`` and ``train`` are (cached uint8 images, (N, 14) targets with NaN for uncertain labels,
    which neither choice nor AUROC counts).
    """
    val_probabilities = image_probabilities(model, val[0], transform, device)
    probabilities, targets = val_probabilities, val[1]
    if train is not None:
        probabilities = torch.cat([image_probabilities(model, train[0], transform, device), probabilities])
        targets = torch.cat([train[1], targets])
    thresholds = RULES[rule](probabilities, targets)
    model.set_thresholds(thresholds)
    summary = auroc_per_observation(val[1].numpy(), val_probabilities.numpy())
    per = {k: (None if math.isnan(v) else round(v, 4)) for k, v in summary.per_observation.items()}
    return {
        "val_auroc": per,
        "val_auroc_mean": None if math.isnan(summary.mean) else round(summary.mean, 4),
        "thresholds": dict(zip(OBSERVATIONS, (round(t, 4) for t in thresholds), strict=True)),
        "threshold_rule": f"{rule} F1 on {'train+val' if train is not None else 'val'}",
    }
