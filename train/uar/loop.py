"""One optimisation loop for the dVAE and for each UAR stage, on the shared runner of train.common.

The loss function may record named terms (:class:`Terms`), averaged over the last epoch for the
metrics: eq 13's CE / global / mask parts, or the dVAE's reconstruction and KL.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from train.common.distributed import DistInfo, sync_buffers, wrap_ddp
from train.common.runner import LoopSpec, LossModule, learning_rate_schedule, train_loop
from train.common.runtime import Precision

logger = logging.getLogger(__name__)


@dataclass
class Context:
    """How to run: device, DDP state, precision, the batch-order generator and AdamW's weight decay."""

    device: torch.device
    info: DistInfo
    precision: Precision
    generator: torch.Generator
    weight_decay: float


@dataclass
class Terms:
    """Running sums of named loss terms; ``calls`` counts loss evaluations (the iteration number)."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: int = 0

    def add(self, **values: torch.Tensor | float) -> None:
        for name, value in values.items():
            self.sums[name] += float(value)
            self.counts[name] += 1

    def reset(self) -> None:
        self.sums.clear()
        self.counts.clear()

    def means(self) -> dict[str, float]:
        return {name: self.sums[name] / self.counts[name] for name in self.sums}


def iterations(settings: dict[str, Any], examples: int, info: DistInfo) -> tuple[int, int]:
    """(iterations, iterations per epoch) from epochs, batch size, world size and max_iterations."""
    per_epoch = max(1, math.ceil(examples / (settings["batch_size"] * info.world_size)))
    total = max(1, math.ceil(settings["epochs"] * per_epoch))
    if settings.get("max_iterations"):
        total = min(total, int(settings["max_iterations"]))
    return total, per_epoch


def run_loop(
    model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor], batches: Iterator[Any],
    settings: dict[str, Any], examples: int, ctx: Context, name: str, terms: Terms,
) -> dict[str, Any]:  # fmt: skip
    """AdamW over the model's trainable parameters, DDP when distributed, the preset's LR schedule;
    returns iterations, final and per-epoch losses and the last epoch's mean terms."""
    total, per_epoch = iterations(settings, examples, ctx.info)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings["lr"], weight_decay=ctx.weight_decay)
    module = wrap_ddp(LossModule(model, loss_fn), ctx.info)
    if ctx.info.is_main:
        logger.info(
            "%s: %d iterations (%d per epoch), batch %d", name, total, per_epoch, settings["batch_size"]
        )
    scheduler = learning_rate_schedule(optimizer, settings.get("schedule") or "constant", total)
    spec = LoopSpec(name, total, per_epoch, settings["batch_size"])
    last_epoch = _LastEpoch(batches, terms, per_epoch, total)
    losses = train_loop(module, last_epoch, optimizer, ctx.precision, spec, ctx.info, scheduler)
    sync_buffers(model, ctx.info)
    return {"iterations": total, "final_loss": losses[-1], "epoch_losses": losses, **terms.means()}


class _LastEpoch:
    """Passes batches through and clears ``terms`` when the last epoch starts, so that the terms
    average what the final loss averages."""

    def __init__(self, batches: Iterator[Any], terms: Terms, per_epoch: int, total: int) -> None:
        self.batches, self.terms = batches, terms
        self.start = ((total - 1) // per_epoch) * per_epoch  # index of the last epoch's first batch
        self.drawn = 0

    def __iter__(self) -> _LastEpoch:
        return self

    def __next__(self) -> Any:
        if self.drawn == self.start:
            self.terms.reset()
        self.drawn += 1
        return next(self.batches)
