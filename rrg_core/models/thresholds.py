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
