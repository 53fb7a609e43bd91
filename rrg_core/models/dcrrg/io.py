"""DCRRG <-> checkpoint folder: the one place that knows how a DCRRG config is stored.

Training saves with :func:`save_dcrrg` and everything that serves or evaluates a model loads
with :func:`load_dcrrg`, so the config round trip cannot drift between the two. config.json holds
``model`` (:class:`DCRRGConfig`), ``preprocess`` (:class:`Preprocess`) and the training settings.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from rrg_core.checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from rrg_core.data.vocab import Vocabulary
from rrg_core.models.dcrrg.config import DCCLIPConfig, DCRRGConfig, default_preprocess
from rrg_core.models.dcrrg.model import DCRRG
from rrg_core.models.preprocess import Preprocess
from rrg_core.models.preprocess import read_preprocess as preprocess_of

KIND = "dcrrg"


def config_to_dict(config: DCRRGConfig) -> dict[str, Any]:
    """The JSON form of a DCRRG config (the ``model`` entry of config.json)."""
    return dataclasses.asdict(config)


def config_from_dict(data: dict[str, Any]) -> DCRRGConfig:
    """Inverse of :func:`config_to_dict`; unknown keys are refused so a typo cannot pass silently."""
    data = dict(data)
    clip = DCCLIPConfig(**data.pop("clip", {}))
    return DCRRGConfig(clip=clip, **data)


def save_dcrrg(
    model: DCRRG,
    folder: str | os.PathLike,
    *,
    vocab: Vocabulary,
    preprocess: Preprocess,
    extra_config: dict[str, Any] | None = None,
    metrics: dict | None = None,
    preset: str | None = None,
    data_fingerprint: str | None = None,
) -> Path:
    """Save ``model`` as a ``dcrrg`` checkpoint with how its images are prepared; ``extra_config``
    records training settings."""
    model_config = config_to_dict(model.config)
    config = {"model": model_config, "preprocess": preprocess.to_dict(), **(extra_config or {})}
    return save_checkpoint(
        folder,
        kind=KIND,
        config=config,
        state_dict=model.state_dict(),
        vocab=vocab,
        metrics=metrics,
        preset=preset,
        data_fingerprint=data_fingerprint,
    )


def load_dcrrg(
    source: str | os.PathLike | Checkpoint, device: str | torch.device = "cpu"
) -> tuple[DCRRG, Checkpoint]:
    """Rebuild a DCRRG from its checkpoint, in eval mode on ``device``.

    The image encoder is built without its ImageNet weights (the checkpoint's replace them), so
    loading needs no network and does no wasted work.
    """
    checkpoint = source if isinstance(source, Checkpoint) else load_checkpoint(source, expected_kind=KIND)
    try:
        config = config_from_dict(checkpoint.config["model"])
    except (KeyError, TypeError) as error:
        raise CheckpointError(
            f"{checkpoint.folder}: config.json has no valid DCRRG 'model' entry ({error})"
        ) from None
    config = dataclasses.replace(config, clip=dataclasses.replace(config.clip, pretrained=None))
    model = DCRRG(config)
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as error:  # missing, unexpected or mis-shaped tensors
        first_lines = " ".join(str(error).splitlines()[:3])
        raise CheckpointError(
            f"{checkpoint.folder}: weights do not fit its DCRRG config ({first_lines[:300]}); "
            "was it written by another version?"
        ) from None
    return model.to(device).eval(), checkpoint


def read_preprocess(checkpoint: Checkpoint, config: DCRRGConfig) -> Preprocess:
    """The checkpoint's ``preprocess`` block. Checkpoints written before it existed recorded only a
    top-level ``image_size``: their preprocessing is the backbone's at that size, exactly what they
    were trained with."""
    return preprocess_of(checkpoint, lambda old: default_preprocess(config, old.get("image_size")))
