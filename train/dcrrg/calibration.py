"""After DCRRG Step 1: the classifier's probabilities on the validation studies, the per-observation
thresholds chosen on them (stored in the model, so Table 7's labels use them) and their AUROC."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rrg_core.data.transforms import TransformConfig
from rrg_core.metrics import auroc_per_observation, choose_thresholds
from rrg_core.models.dcrrg import DCRRG
from rrg_core.observations import NUM_OBSERVATIONS, OBSERVATIONS
from train.dcrrg.data import to_model_input


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
    model: DCRRG, cached: Tensor, targets: Tensor, transform: TransformConfig, device: torch.device
) -> dict:
    """After Step 1: F1-best thresholds on the validation studies (stored in the model) and their AUROC.

    ``targets`` (N, 14) uses NaN for uncertain labels, which neither choice nor AUROC counts.
    """
    probabilities = image_probabilities(model, cached, transform, device)
    thresholds = choose_thresholds(probabilities, targets)
    model.set_thresholds(thresholds)
    summary = auroc_per_observation(targets.numpy(), probabilities.numpy())
    per = {k: (None if math.isnan(v) else round(v, 4)) for k, v in summary.per_observation.items()}
    return {
        "val_auroc": per,
        "val_auroc_mean": None if math.isnan(summary.mean) else round(summary.mean, 4),
        "thresholds": dict(zip(OBSERVATIONS, (round(t, 4) for t in thresholds), strict=True)),
    }
