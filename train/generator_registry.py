"""The report generators that ship with the project, by checkpoint kind (for ``python -m train evaluate``).

Each factory imports its model code only when called: loading DCRRG's modules takes seconds (timm,
transformers), which commands that never build a model should not pay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from rrg_core.checkpoints import Checkpoint
    from rrg_core.evaluation import ReportGenerator


def dcrrg(checkpoint: Checkpoint, device: torch.device, *, beam_size: int) -> ReportGenerator:
    """DCRRG: see :func:`rrg_core.generators.dcrrg_generator_from_checkpoint`."""
    from rrg_core.generators import dcrrg_generator_from_checkpoint

    return dcrrg_generator_from_checkpoint(checkpoint, device, beam_size=beam_size)


def uar(checkpoint: Checkpoint, device: torch.device, *, beam_size: int) -> ReportGenerator:
    """UAR: see :func:`rrg_core.uar_generator.uar_generator_from_checkpoint`."""
    from rrg_core.uar_generator import uar_generator_from_checkpoint

    return uar_generator_from_checkpoint(checkpoint, device, beam_size=beam_size)


BUILTIN_GENERATORS = {"dcrrg": dcrrg, "uar": uar}
"""Checkpoint kind -> factory with :class:`train.evaluate_cmd.GeneratorFactory`'s signature."""
