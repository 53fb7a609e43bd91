"""The one training harness of DCRRG and UAR: run folder, seed, device, AMP, DDP, the loop with its
logs and TensorBoard curves, per-stage checkpoints with resume, and the final publication.

A model's command describes its training as a list of :class:`StageSpec` (what trains, the batch
stream, the loss); :meth:`Harness.run_stages` runs those still to do, saves each into its step
folder and publishes the last into the run folder. Curves go to ``RUN_DIR/tensorboard/`` (rank 0):
``<stage>/loss`` and ``<stage>/lr`` per optimizer step and ``val/<metric>`` per stage, on one
global step that runs on across stages and resumed runs.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrg_core.errors import RRGError
from rrg_core.progress import progress_bar
from train.common.distributed import (
    DistInfo,
    barrier,
    cleanup_distributed,
    setup_distributed,
    sync_buffers,
    wrap_ddp,
)  # fmt: skip
from train.common.presets import LoopSettings
from train.common.runner import learning_rate_schedule, step_folder
from train.common.runtime import (
    Precision,
    apply_thread_policy,
    choose_device,
    refresh_threads,
    seed_everything,
)

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
GLOBAL_STEP = "global_step"  # the metrics key of the harness's iteration counter after a stage

LossFn = Callable[[nn.Module, Any], torch.Tensor]


@dataclass
class Terms:
    """Running sums of named loss terms; ``calls`` counts loss evaluations (the iteration number)."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: int = 0

    def add(self, **values: torch.Tensor | float) -> None:
        """Add one value per named term."""
        for name, value in values.items():
            self.sums[name] += float(value)
            self.counts[name] += 1

    def reset(self) -> None:
        """Forget the sums (not ``calls``)."""
        self.sums.clear()
        self.counts.clear()

    def means(self) -> dict[str, float]:
        """Each term's mean since the last reset."""
        return {name: self.sums[name] / self.counts[name] for name in self.sums}


@dataclass
class Stage:
    """One stage ready to train: the module whose trainable parameters the optimizer takes, its loss,
    endless batches and how many examples make an epoch.

    ``param_groups`` (default: every trainable parameter at ``settings.lr``); ``images_per_example``
    only scales the images/s of the log; ``terms`` are averaged over the last epoch into the result.
    """

    settings: LoopSettings
    model: nn.Module
    loss_fn: LossFn
    batches: Iterator[Any]
    examples: int
    param_groups: list[dict[str, Any]] | None = None
    images_per_example: int = 1
    terms: Terms | None = None


@dataclass
class StageSpec:
    """A stage of a model's training: ``index`` numbers its folder (``step<index>``), ``name`` tags its
    logs and curves; ``build`` makes the :class:`Stage` when its turn comes (after the stages before
    it changed the model); ``finish`` adds metrics after training (validation: ``val_*`` keys go to
    the curves)."""

    index: int
    name: str
    build: Callable[[], Stage]
    finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None


def iterations(settings: LoopSettings, examples: int, info: DistInfo) -> tuple[int, int]:
    """(iterations, iterations per epoch) from epochs, batch size, world size and max_iterations."""
    per_epoch = max(1, math.ceil(examples / (settings.batch_size * info.world_size)))
    total = max(1, math.ceil(settings.epochs * per_epoch))
    if settings.max_iterations:
        total = min(total, settings.max_iterations)
    return total, per_epoch


class LossModule(nn.Module):
    """Holds the model and one stage's loss function, so DDP sees the loss as ``forward``: DDP
    synchronises gradients only for computations that go through the wrapper's forward."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        """The loss of one batch."""
        return self.loss_fn(self.model, batch)


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


class Harness:
    """Device, DDP, seed, precision, run folder and curves of one training command.

    Use as a context manager around the command's work: it joins the process group (under torchrun),
    sets the thread policy and creates the run folder, and always leaves the group and closes the
    curves' writer.
    """

    def __init__(self, args: argparse.Namespace, command: str, weight_decay: float) -> None:
        if not args.data.is_dir():
            raise RRGError(f"data folder {args.data} not found")
        if args.workers < 0:
            raise RRGError(f"--workers must be 0 or more, got {args.workers}")
        self.args, self.command, self.run_dir = args, command, Path(args.out)
        self.weight_decay = weight_decay
        self.device = choose_device(args.device)
        self.info: DistInfo = DistInfo(device=self.device)
        self.precision = Precision(self.device)
        self.generator = torch.Generator()
        self.global_step = 0
        self._writer: Any = None
        self._started = 0.0

    def __enter__(self) -> Harness:
        self.info = setup_distributed(self.device)
        self.device = self.info.device
        self.precision = Precision(self.device)
        threads = apply_thread_policy(self.info.enabled and self.device.type == "cpu")
        logger.info("%s preset %s on %s (%d threads, world size %d)", self.command, self.args.preset,
                    self.device, threads, self.info.world_size)  # fmt: skip
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.info)
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: Any) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if kind is None and self.info.is_main:
                print(f"{self.command}: {self.run_dir} ready ({time.perf_counter() - self._started:.0f}s)")
        finally:
            cleanup_distributed()

    def seed(self) -> torch.Generator:
        """Seed everything from ``--seed`` and return the batch-order generator. One seed on every
        rank: they draw the same order and each takes its own share of it."""
        self.generator = seed_everything(self.args.seed)
        return self.generator

    @property
    def writer(self) -> Any:
        """The TensorBoard writer of ``RUN_DIR/tensorboard`` (rank 0 only; None elsewhere)."""
        if self._writer is None and self.info.is_main:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when used

            self._writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR))
        return self._writer

    def resume_from(self, metrics: dict[str, Any]) -> None:
        """Continue the global step after the finished stages recorded in ``metrics``."""
        steps = [m.get(GLOBAL_STEP, 0) for m in metrics.values() if isinstance(m, dict)]
        self.global_step = max([self.global_step, *steps])

    def log_validation(self, metrics: dict[str, Any]) -> None:
        """``val_<name>`` numbers of ``metrics`` as ``val/<name>`` at the current global step."""
        if self.writer is None:
            return
        for key, value in metrics.items():
            if key.startswith("val_") and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(f"val/{key[4:]}", value, self.global_step)
        self.writer.flush()

    def train(self, name: str, stage: Stage) -> dict[str, Any]:
        """AdamW over the stage's parameters, DDP when distributed, the settings' LR schedule; returns
        iterations, final and per-epoch losses, the last epoch's mean terms and the global step."""
        settings, info = stage.settings, self.info
        total, per_epoch = iterations(settings, stage.examples, info)
        groups = stage.param_groups or [
            {"params": [p for p in stage.model.parameters() if p.requires_grad], "lr": settings.lr}
        ]
        optimizer = torch.optim.AdamW(groups, weight_decay=self.weight_decay)
        module = wrap_ddp(LossModule(stage.model, stage.loss_fn), info)
        if info.is_main:
            logger.info(
                "%s: %d iterations (%d per epoch), batch %d", name, total, per_epoch, settings.batch_size
            )
        scheduler = learning_rate_schedule(optimizer, settings.schedule, total)
        batches = (
            stage.batches if stage.terms is None else _LastEpoch(stage.batches, stage.terms, per_epoch, total)
        )
        losses = self._loop(name, module, batches, optimizer, scheduler, total, per_epoch,
                            settings.batch_size * stage.images_per_example)  # fmt: skip
        sync_buffers(stage.model, info)
        terms = stage.terms.means() if stage.terms is not None else {}
        return {"iterations": total, "final_loss": losses[-1], "epoch_losses": losses, **terms,
                GLOBAL_STEP: self.global_step}  # fmt: skip

    def _loop(
        self, name: str, module: nn.Module, batches: Iterator[Any], optimizer: torch.optim.Optimizer,
        scheduler: Any, total: int, per_epoch: int, examples_per_batch: int,
    ) -> list[float]:  # fmt: skip
        """``total`` optimizer steps; per step the curves' loss and rate, per epoch one log line (and a
        tqdm bar when stderr is a terminal). Returns each epoch's mean loss (the last may be partial)."""
        info, writer = self.info, self.writer
        epochs: list[float] = []
        running, seen, started = 0.0, 0, time.perf_counter()
        bar = progress_bar(total=total, desc=name, unit="it", leave=False, show=info.is_main)
        for iteration in range(1, total + 1):
            if iteration % per_epoch == 1 or per_epoch == 1:
                self._take_granted_threads(name)
            rate = optimizer.param_groups[0]["lr"]
            with self.precision.autocast():
                loss = module(next(batches))
            self.precision.step(loss, optimizer)
            if scheduler is not None:
                scheduler.step()
            value = float(loss.detach())
            running, seen = running + value, seen + 1
            self.global_step += 1
            if writer is not None:
                writer.add_scalar(f"{name}/loss", value, self.global_step)
                writer.add_scalar(f"{name}/lr", rate, self.global_step)
            bar.update(1)
            bar.set_postfix(loss=f"{running / seen:.4f}")
            if iteration % per_epoch == 0 or iteration == total:
                seconds = time.perf_counter() - started
                speed = seen * examples_per_batch * info.world_size / max(seconds, 1e-9)
                epochs.append(running / seen)
                if info.is_main:
                    bar.write(f"{name} epoch {len(epochs)}: loss {running / seen:.4f}, {speed:.1f} images/s, "
                              f"{seconds:.1f}s")  # fmt: skip
                running, seen, started = 0.0, 0, time.perf_counter()
        bar.close()
        return epochs

    def _take_granted_threads(self, name: str) -> None:
        """At each epoch's start, the cores a launcher has since granted (:func:`refresh_threads`)."""
        if self.info.enabled:  # distributed ranks keep one thread each
            return
        granted = refresh_threads()
        if granted is not None and self.info.is_main:
            logger.info("%s: now %d threads (granted by the launcher)", name, granted)

    def run_stages(
        self, model: nn.Module, specs: Sequence[StageSpec], metrics: dict[str, Any], done: list[int],
        save: Callable[[Path, list[int], dict[str, Any]], None],
    ) -> None:  # fmt: skip
        """Train each spec in order; after each, rank 0 saves the model with ``save(folder, done,
        metrics)`` into its step folder; then the last state is published into the run folder.

        ``metrics`` and ``done`` are those of the checkpoint the run starts from; each stage adds its
        result under its name."""
        self.resume_from(metrics)
        for spec in specs:
            started = time.perf_counter()
            result = self.train(spec.name, spec.build())
            if spec.finish is not None:
                result.update(spec.finish(result))
            result["seconds"] = round(time.perf_counter() - started, 1)
            logger.info(
                "%s done in %.1fs, final loss %.4f", spec.name, result["seconds"], result["final_loss"]
            )
            self.log_validation(result)
            metrics[spec.name], done = result, sorted(set(done) | {spec.index})
            if self.info.is_main:
                save(step_folder(self.run_dir, spec.index), done, metrics)
            barrier(self.info)
        if self.info.is_main:
            publish(lambda folder: save(folder, done, metrics), self.run_dir)
        barrier(self.info)


def publish(save: Callable[[Path], None], folder: Path) -> None:
    """Write a checkpoint's files into ``folder`` without deleting what else is there.

    The model savers replace their target folder as a whole, which would delete the step folders,
    caches and curves; so ``save`` writes into a hidden sibling and the files are moved in,
    config.json last (a folder without its config.json is not taken for a checkpoint).
    """
    staging = folder / ".final-staging"
    shutil.rmtree(staging, ignore_errors=True)
    save(staging)
    for name in sorted(os.listdir(staging), key=lambda name: name == "config.json"):
        target = folder / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    staging.rmdir()
    logger.info("final checkpoint: %s", folder)
