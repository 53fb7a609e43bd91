"""Per-observation decision thresholds kept in a model (a buffer), for the models whose reader's
labels condition what they write (DCRRG's Table 7 and label rows, UAR's label context)."""

from __future__ import annotations

import torch
from torch import Tensor

from rrg_core.observations import NUM_OBSERVATIONS


def store_thresholds(buffer: Tensor, values: Tensor | list[float] | float) -> None:
    """Copy 14 thresholds (or one for all) in [0, 1] into ``buffer`` (14,); anything else is refused."""
    new = torch.as_tensor(values, dtype=buffer.dtype).to(buffer.device)
    if new.numel() not in (1, NUM_OBSERVATIONS) or not bool(((new >= 0) & (new <= 1)).all()):
        raise ValueError(f"need 1 or {NUM_OBSERVATIONS} thresholds in [0, 1], got {new.tolist()}")
    buffer.copy_(new.reshape(-1).expand(NUM_OBSERVATIONS))


def cut(probabilities: Tensor, thresholds: Tensor) -> Tensor:
    """(B, 14) 0/1 labels: each probability at or above its observation's threshold."""
    return (probabilities >= thresholds.to(probabilities.device)).long()


def draw(probabilities: Tensor, thresholds: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """(B, 14) 0/1 labels drawn from a reader's uncertainty: 1 with probability sigmoid(logit p -
    logit t), one half at the observation's threshold t and following the reader's odds around it;
    what sampled alternatives are written for, so that a finding the reader is unsure of is present
    in some and absent in others."""
    probabilities = probabilities.float().clamp(1e-6, 1 - 1e-6)
    thresholds = thresholds.to(probabilities.device).float().clamp(1e-6, 1 - 1e-6)
    odds = torch.sigmoid(torch.logit(probabilities) - torch.logit(thresholds))
    where = generator.device if generator is not None else odds.device
    draws = torch.rand(odds.shape, generator=generator, device=where).to(odds.device)
    return (draws < odds).long()
