"""Resumable runs and batch streams: numbered step folders, the plan of what to skip, seeded index
batches and the learning-rate schedules; the loop itself is :mod:`train.common.harness`.

A run folder holds one checkpoint folder per finished step (``step1/``, ``step2/``, ...). Checkpoint
saves are atomic, so a step folder with its config.json and weights is a finished step: a rerun skips
it and continues from the last finished step before the first one still to do.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from train.common.distributed import DistInfo

logger = logging.getLogger(__name__)


def step_folder(run_dir: Path, step: int) -> Path:
    """``RUN_DIR/step<k>``."""
    return run_dir / f"step{step}"


def step_complete(run_dir: Path, step: int) -> bool:
    """Whether step ``step`` finished: its checkpoint folder has its config and weights."""
    folder = step_folder(run_dir, step)
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


@dataclass(frozen=True)
class StepPlan:
    """Steps to run, steps skipped as finished, and the checkpoint to start from (None: fresh)."""

    todo: tuple[int, ...]
    skipped: tuple[int, ...]
    start_from: Path | None


def plan_steps(run_dir: Path, requested: Sequence[int]) -> StepPlan:
    """Skip finished requested steps; start from the last finished step before the first to do.

    ``--steps 3,4`` thus starts from ``step2/`` when it is there (and from scratch otherwise).
    """
    todo = tuple(k for k in requested if not step_complete(run_dir, k))
    skipped = tuple(k for k in requested if k not in todo)
    before = todo[0] if todo else max(requested) + 1
    done = [k for k in range(1, before) if step_complete(run_dir, k)]
    return StepPlan(todo, skipped, step_folder(run_dir, done[-1]) if done else None)


def index_batches(
    count: int,
    batch_size: int,
    generator: torch.Generator,
    info: DistInfo,
    weights: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Endless batches of indices into ``count`` examples: a fresh seeded shuffle per epoch, or, with
    ``weights`` (count,), ``count`` draws with replacement in proportion to them per epoch.

    Under DDP every rank draws the same order and takes its own interleaved share, as
    DistributedSampler does; the shares are padded to equal length so ranks stay in step.
    """
    if count < 1:
        raise ValueError("no training examples")
    if weights is not None and (
        weights.shape != (count,) or not bool((weights >= 0).all()) or weights.sum() <= 0
    ):
        raise ValueError(f"weights must be {count} non-negative values, not all zero")
    while True:
        if weights is None:
            order = torch.randperm(count, generator=generator)
        else:
            order = torch.multinomial(weights.double(), count, replacement=True, generator=generator)
        per_rank = math.ceil(count / info.world_size)
        order = order.repeat(math.ceil(per_rank * info.world_size / count))[: per_rank * info.world_size]
        mine = order[info.rank :: info.world_size]
        for start in range(0, len(mine), batch_size):
            batch = mine[start : start + batch_size]
            if len(batch) == batch_size or start == 0:
                yield batch


SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(
    optimizer: torch.optim.Optimizer, name: str, iterations: int, warmup: float = 0.05
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """None for ``constant``; for ``cosine`` a linear warm-up over ``warmup`` of the iterations, then
    a cosine decay to zero. Short CPU schedules end far from convergence with a constant rate: the
    decay lets the last epochs settle instead of stopping mid-stride."""
    if name == "constant":
        return None
    if name != "cosine":
        raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    ramp = max(1, round(warmup * iterations))

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / ramp
        progress = (step - ramp) / max(1, iterations - ramp)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
