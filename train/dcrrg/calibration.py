"""After DCRRG Steps 1 and 2: the classifier's probabilities on the calibration studies, the
per-observation thresholds chosen on them (stored in the model, so Table 7's labels use them) and the
validation AUROC.

Step 2 moves the encoder under the Step-1 heads, so thresholds chosen after Step 1 are stale after
it: both steps calibrate, and the last one's thresholds are the model's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rrg_core.data.transforms import TransformConfig
from rrg_core.models.dcrrg import DCRRG
from rrg_core.observations import NUM_OBSERVATIONS
from train.common.thresholds import choose
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
    model: DCRRG,
    val: tuple[Tensor, Tensor],
    transform: TransformConfig,
    device: torch.device,
    rule: str = "observation",
    train: tuple[Tensor, Tensor] | None = None,
) -> dict:
    """Thresholds by ``rule`` (:func:`train.common.thresholds.choose`) on the validation studies, or
    on the training and validation studies together when ``train`` is given, stored in the model;
    and the validation AUROC. ``val`` and ``train`` are (cached uint8 images, (N, 14) targets with
    NaN for uncertain labels)."""

    def probabilities(split: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return image_probabilities(model, split[0], transform, device), split[1]

    thresholds, summary = choose(probabilities(val), rule, None if train is None else probabilities(train))
    model.set_thresholds(thresholds)
    return summary
