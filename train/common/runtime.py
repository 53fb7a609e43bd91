"""Seeds, devices, mixed precision and the CPU thread policy."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rrg_core.errors import RRGError

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA); return a torch generator for batch order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def choose_device(name: str | None) -> torch.device:
    """``cpu``, ``cuda`` (or ``cuda:N``), or None for CUDA when there is one; refuses a missing GPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RRGError(f"unknown device {name!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RRGError("--device cuda was asked for but no CUDA GPU is visible")
    if device.type not in ("cpu", "cuda"):
        raise RRGError(f"unsupported device {name!r}; use cpu or cuda")
    return device


def apply_thread_policy(distributed_cpu: bool) -> int:
    """All cores for a single process; one thread per rank when several CPU ranks share the machine
    (more would oversubscribe the cores and slow every rank down); ``RRG_TRAIN_THREADS`` overrides.
    Returns the thread count."""
    threads = 1 if distributed_cpu else max(1, os.cpu_count() or 1)
    # An explicit override, for machines shared with other jobs: there, two OpenMP threads competing
    # with another process for two cores ran ~8x slower than one thread (measured here).
    override = os.environ.get("RRG_TRAIN_THREADS", "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            raise RRGError(f"RRG_TRAIN_THREADS must be a positive integer, got {override!r}")
        threads = int(override)
    torch.set_num_threads(threads)
    return threads


THREADS_FILE_VARIABLE = "RRG_TRAIN_THREADS_FILE"


def refresh_threads() -> int | None:
    """The thread count a launcher has since granted, applied: ``$RRG_TRAIN_THREADS_FILE`` names a file
    holding a positive integer (the app's first start writes it when one of two trainings sharing the
    cores ends, so the other takes them over). Returns the new count when it changed, else None."""
    path = os.environ.get(THREADS_FILE_VARIABLE, "").strip()
    try:
        text = Path(path).read_text(encoding="utf-8").strip() if path else ""
    except OSError:  # not written yet, or gone: keep the threads we have
        return None
    if not text.isdigit() or int(text) < 1 or int(text) == torch.get_num_threads():
        return None
    torch.set_num_threads(int(text))
    return int(text)


@dataclass
class Precision:
    """Mixed precision on CUDA only: bfloat16 where supported, else float16 with loss scaling.

    On the CPU everything stays float32 (CPU autocast is slower than float32 on most CPUs here).
    """

    device: torch.device
    enabled: bool = True

    def __post_init__(self) -> None:
        self.enabled = self.enabled and self.device.type == "cuda"
        self.dtype = torch.bfloat16
        if self.enabled and not torch.cuda.is_bf16_supported():
            self.dtype = torch.float16
        # Only float16 underflows gradients; bfloat16 has float32's exponent range.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forward pass's autocast context (a no-op on the CPU)."""
        if not self.enabled:
            yield
            return
        with torch.autocast(device_type="cuda", dtype=self.dtype):
            yield

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward, (unscaled) optimizer step and zeroed gradients."""
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
