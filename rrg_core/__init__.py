"""rrg-review core: data, models, metrics and the review pipeline (no UI code here).

The three-line API::

    import rrg_core
    generator = rrg_core.load_generator("checkpoints/dcrrg")
    print(generator.draft(["frontal.png", "lateral.png"]).text)

``rrg_core.load_pipeline("checkpoints")`` gives the :class:`~rrg_core.pipeline.ReviewPipeline` of
both models. Both load lazily, so ``import rrg_core`` stays cheap (no torch, timm or transformers).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    import torch

    from rrg_core.checkpoints import Checkpoint
    from rrg_core.generators import ImageReportGenerator
    from rrg_core.pipeline import ReviewPipeline


def load_generator(
    folder: str | os.PathLike | Checkpoint, device: str | torch.device | None = None, *, beam_size: int = 3
) -> ImageReportGenerator:
    """The report generator of one checkpoint folder (DCRRG or UAR; its config.json says which), on
    ``device`` (None: CUDA when there is one, else the CPU). ``.draft(views).text`` is a report."""
    from rrg_core.generators import load_generator as load

    return load(folder, device, beam_size=beam_size)


def load_pipeline(
    folder: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    beam_size: int = 3,
    neighbours: int = 5,
) -> ReviewPipeline:
    """The review pipeline of the newest DCRRG and UAR checkpoints under ``folder`` (None: the
    ``RRG_CHECKPOINTS`` environment variable): ``.review(views)`` gives both drafts and the evidence."""
    from rrg_core.pipeline import ReviewPipeline

    return ReviewPipeline.from_checkpoints(folder, device=device, beam_size=beam_size, neighbours=neighbours)


__all__ = ["__version__", "load_generator", "load_pipeline"]
