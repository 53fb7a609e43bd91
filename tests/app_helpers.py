"""Shared by the app's tests: a checkpoint folder of tiny DCRRG and UAR models with retrieval indexes,
and a free loopback port."""

from __future__ import annotations

import socket
from pathlib import Path

from tiny_models import save_tiny_dcrrg, save_tiny_uar


def app_checkpoints(phantoms: Path, root: Path) -> Path:
    """``root`` with a tiny random DCRRG and UAR checkpoint, each with the image index of the phantoms'
    training split built by ``python -m train index`` (seconds)."""
    from train.__main__ import main

    save_tiny_dcrrg(phantoms, root / "dcrrg")
    save_tiny_uar(phantoms, root / "uar")
    for kind in ("dcrrg", "uar"):
        assert (
            main(["index", "--checkpoint", str(root / kind), "--data", str(phantoms), "--workers", "0"]) == 0
        )
    return root


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: The stages of a fake DCRRG run (steps per stage) and the loss each starts and ends at.
FAKE_STAGES = {"step1": (4.0, 1.2), "step2": (3.0, 0.9), "step3": (6.0, 2.4), "step4": (2.8, 1.5)}


def write_training_events(folder: Path, steps_per_stage: int = 60, stages: dict | None = None) -> Path:
    """TensorBoard events as training writes them into ``folder/tensorboard``: ``<stage>/loss`` and
    ``<stage>/lr`` per step on one global step, ``val/bleu4`` and ``val/ce_f1`` after each stage."""
    import math
    import random

    from torch.utils.tensorboard import SummaryWriter

    noise = random.Random(0)
    writer = SummaryWriter(str(folder / "tensorboard"))
    step = 0
    for k, (stage, (start, end)) in enumerate((stages or FAKE_STAGES).items()):
        for i in range(steps_per_stage):
            trend = end + (start - end) * math.exp(-4 * i / steps_per_stage)
            writer.add_scalar(f"{stage}/loss", trend * (1 + 0.15 * noise.uniform(-1, 1)), step)
            writer.add_scalar(f"{stage}/lr", 1e-3 * (1 - i / steps_per_stage), step)
            step += 1
        writer.add_scalar("val/bleu4", 0.05 + 0.04 * k, step - 1)
        writer.add_scalar("val/ce_f1", 0.2 + 0.1 * k, step - 1)
    writer.close()
    return folder / "tensorboard"
