"""Trained models as report generators, and the one loader from a checkpoint folder.

:data:`LOADERS` maps each checkpoint kind to its generator's ``from_checkpoint``; the pipeline,
``train evaluate``, ``train index``, ``train review`` and ``train pointing-game`` all load through
:func:`load_generator`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from rrg_core.checkpoints import Checkpoint, CheckpointError, load_checkpoint
from rrg_core.generators.base import BatchDrafts, ImageReportGenerator
from rrg_core.generators.dcrrg import DCRRGGenerator
from rrg_core.generators.uar import UARExplanation, UARGenerator

#: Checkpoint kind -> ``from_checkpoint(checkpoint, device, *, beam_size)``.
LOADERS: dict[str, Callable[..., ImageReportGenerator]] = {
    "dcrrg": DCRRGGenerator.from_checkpoint,
    "uar": UARGenerator.from_checkpoint,
}


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_generator(
    source: str | os.PathLike | Checkpoint,
    device: str | torch.device | None = None,
    *,
    beam_size: int = 3,
    expected_kind: str | None = None,
) -> ImageReportGenerator:
    """The report generator of a checkpoint folder (its config.json names the kind), on ``device``
    (None: CUDA when there is one). ``g.draft(["frontal.png", "lateral.png"]).text`` is its report.

    Raises :class:`CheckpointError` for a folder that is not a checkpoint, or of a kind that writes
    no reports (a dVAE tokenizer, say), naming the kinds that do.
    """
    checkpoint = source if isinstance(source, Checkpoint) else load_checkpoint(source, expected_kind=expected_kind)
    if checkpoint.kind not in LOADERS:
        raise CheckpointError(
            f"{checkpoint.folder} is a {checkpoint.kind!r} checkpoint, which writes no reports; "
            f"expected one of: {', '.join(LOADERS)}"
        )
    device = torch.device(device) if device is not None else default_device()
    return LOADERS[checkpoint.kind](checkpoint, device, beam_size=beam_size)


__all__ = [
    "LOADERS",
    "BatchDrafts",
    "DCRRGGenerator",
    "ImageReportGenerator",
    "UARExplanation",
    "UARGenerator",
    "default_device",
    "load_generator",
]
