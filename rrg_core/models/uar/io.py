"""dVAE and UAR <-> checkpoint folders: the one place that knows how their configs are stored.

- A ``dvae`` checkpoint: config.json ``{"model": DVAEConfig, "preprocess": Preprocess, ...training
  settings}``, no vocab.
- A ``feature_tokenizer`` checkpoint: ``{"model": FeatureTokenizerConfig, "preprocess": ...}``, the
  frozen CNN layers and the k-means codebook.
- A ``uar`` checkpoint: ``{"model": UARConfig, "tokenizer": {"kind": "dvae" | "features", ...its
  config} or null, "preprocess": Preprocess, ...}`` plus the vocab. When the model has its tokenizer
  attached, the tokenizer's weights are part of the UAR checkpoint (under ``tokenizer.``), so the app
  can serve images from one folder. A ``tokenizer`` entry without ``kind`` (written before the
  feature tokenizer existed) is a dVAE.

Loading refuses, with the folder named: a config with unknown or missing fields, weights that do not
fit the config, a vocabulary whose size differs from the model's, and a dVAE whose codebook or grid
does not match the UAR config.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrg_core.checkpoints import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import RRGError
from rrg_core.models.preprocess import Preprocess
from rrg_core.models.preprocess import read_preprocess as preprocess_of
from rrg_core.models.uar.config import UARConfig, check_tokenizer, default_preprocess
from rrg_core.models.uar.dvae import DVAE, DVAEConfig, DVAEEncoder
from rrg_core.models.uar.feature_tokenizer import FeatureTokenizer, FeatureTokenizerConfig
from rrg_core.models.uar.model import UAR

DVAE_KIND = "dvae"
FEATURE_TOKENIZER_KIND = "feature_tokenizer"
UAR_KIND = "uar"
#: A tokenizer entry's ``kind`` -> its config class and module.
_TOKENIZER_KINDS = {"dvae": (DVAEConfig, DVAEEncoder), "features": (FeatureTokenizerConfig, FeatureTokenizer)}


def uar_config_from_dict(data: dict[str, Any]) -> UARConfig:
    """The inverse of ``dataclasses.asdict``; unknown keys are refused so a typo cannot pass silently."""
    return UARConfig(**data)


def dvae_config_from_dict(data: dict[str, Any]) -> DVAEConfig:
    """The inverse of ``dataclasses.asdict`` for a dVAE config."""
    return DVAEConfig(**data)


def save_tokenizer(
    tokenizer: DVAE | FeatureTokenizer,
    folder: str | os.PathLike,
    *,
    preprocess: Preprocess,
    extra_config: dict[str, Any] | None = None,
    metrics: dict | None = None,
    preset: str | None = None,
    data_fingerprint: str | None = None,
) -> Path:
    """Save an LSU tokenizer as a ``dvae`` or ``feature_tokenizer`` checkpoint (its kind); ``extra_config``
    records how it was trained or fit."""
    kind = DVAE_KIND if isinstance(tokenizer, DVAE) else FEATURE_TOKENIZER_KIND
    config = {"model": dataclasses.asdict(tokenizer.config), "preprocess": preprocess.to_dict()}
    return save_checkpoint(
        folder, kind=kind, config={**config, **(extra_config or {})}, state_dict=tokenizer.state_dict(),
        metrics=metrics, preset=preset, data_fingerprint=data_fingerprint,
    )  # fmt: skip


def load_dvae(
    source: str | os.PathLike | Checkpoint, device: str | torch.device = "cpu"
) -> tuple[DVAE, Checkpoint]:
    """Rebuild a dVAE from its checkpoint, in eval mode on ``device``."""
    checkpoint = _checkpoint(source, DVAE_KIND)
    config = _parse(checkpoint, "model", dvae_config_from_dict, "dVAE")
    model = DVAE(config)
    _load_weights(model, checkpoint, "dVAE")
    return model.to(device).eval(), checkpoint


def load_lsu_tokenizer(
    source: str | os.PathLike | Checkpoint, device: str | torch.device = "cpu"
) -> tuple[DVAE | FeatureTokenizer, Checkpoint]:
    """A ``dvae`` or ``feature_tokenizer`` checkpoint's tokenizer, in eval mode on ``device``."""
    checkpoint = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    if checkpoint.kind == DVAE_KIND:
        return load_dvae(checkpoint, device)
    checkpoint = _checkpoint(checkpoint, FEATURE_TOKENIZER_KIND)
    config = _parse(checkpoint, "model", lambda d: FeatureTokenizerConfig(**d), "feature tokenizer")
    tokenizer = FeatureTokenizer(config)
    _load_weights(tokenizer, checkpoint, "feature tokenizer")
    return tokenizer.to(device).eval(), checkpoint


def load_tokenizer_for(
    config: UARConfig, source: str | os.PathLike | Checkpoint, device: str | torch.device = "cpu"
) -> DVAE | FeatureTokenizer:
    """The tokenizer of ``source`` if its codebook and grid fit ``config``; otherwise CheckpointError."""
    tokenizer, checkpoint = load_lsu_tokenizer(source, device)
    try:
        check_tokenizer(tokenizer.config, config)
    except RRGError as error:
        raise CheckpointError(
            f"tokenizer checkpoint {checkpoint.folder} does not fit this UAR model: {error}"
        ) from None
    return tokenizer


def tokenizer_entry(tokenizer: DVAEEncoder | FeatureTokenizer) -> dict[str, Any]:
    """What a UAR checkpoint's config records of its attached tokenizer: kind and config."""
    kind = "features" if isinstance(tokenizer, FeatureTokenizer) else "dvae"
    return {"kind": kind, **dataclasses.asdict(tokenizer.config)}


def _tokenizer_from_entry(entry: dict[str, Any]) -> DVAEEncoder | FeatureTokenizer:
    """The (untrained) tokenizer module of a UAR checkpoint's ``tokenizer`` entry."""
    fields = dict(entry)
    kind = fields.pop("kind", "dvae")
    if kind not in _TOKENIZER_KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(_TOKENIZER_KINDS)}")
    config_class, module_class = _TOKENIZER_KINDS[kind]
    return module_class(config_class(**fields))


def save_uar(
    model: UAR,
    folder: str | os.PathLike,
    *,
    vocab: Vocabulary,
    preprocess: Preprocess,
    extra_config: dict[str, Any] | None = None,
    metrics: dict | None = None,
    preset: str | None = None,
    data_fingerprint: str | None = None,
) -> Path:
    """Save a UAR model (with its tokenizer, when attached) as a ``uar`` checkpoint."""
    if len(vocab) != model.config.vocab_size:
        raise RRGError(f"the vocabulary has {len(vocab)} tokens but the model {model.config.vocab_size}")
    tokenizer = None if model.tokenizer is None else tokenizer_entry(model.tokenizer)
    config = {
        "model": dataclasses.asdict(model.config), "tokenizer": tokenizer, "preprocess": preprocess.to_dict(),
        **(extra_config or {}),
    }  # fmt: skip
    return save_checkpoint(
        folder, kind=UAR_KIND, config=config, state_dict=model.state_dict(), vocab=vocab, metrics=metrics,
        preset=preset, data_fingerprint=data_fingerprint,
    )  # fmt: skip


def load_uar(
    source: str | os.PathLike | Checkpoint, device: str | torch.device = "cpu"
) -> tuple[UAR, Checkpoint]:
    """Rebuild a UAR model from its checkpoint, in eval mode on ``device``, in its saved stage.

    The "base" row's CNN is built without ImageNet weights (the checkpoint's replace them), so
    loading needs no network.
    """
    checkpoint = _checkpoint(source, UAR_KIND)
    config = _parse(checkpoint, "model", uar_config_from_dict, "UAR")
    config = dataclasses.replace(config, base_pretrained=None)
    tokenizer = None
    if checkpoint.config.get("tokenizer") is not None:
        tokenizer = _parse(checkpoint, "tokenizer", _tokenizer_from_entry, "LSU tokenizer")
    try:
        model = UAR(config, tokenizer)
    except RRGError as error:
        raise CheckpointError(f"{checkpoint.folder}: {error}") from None
    if checkpoint.vocab is not None and len(checkpoint.vocab) != config.vocab_size:
        raise CheckpointError(
            f"{checkpoint.folder}: vocab.json has {len(checkpoint.vocab)} tokens but the model "
            f"{config.vocab_size}"
        )
    _load_weights(model, checkpoint, "UAR")
    return model.to(device).eval(), checkpoint


def _checkpoint(source: str | os.PathLike | Checkpoint, kind: str) -> Checkpoint:
    if isinstance(source, Checkpoint):
        if source.kind != kind:
            raise CheckpointError(
                f"checkpoint {source.folder} is a {source.kind!r} checkpoint, expected {kind!r}"
            )
        return source
    return load_checkpoint(source, expected_kind=kind)


def _parse(checkpoint: Checkpoint, key: str, parse: Any, what: str) -> Any:
    """``parse(config[key])`` with every fault reported as a CheckpointError naming the folder."""
    try:
        return parse(dict(checkpoint.config[key]))
    except (KeyError, TypeError, ValueError, RRGError) as error:
        raise CheckpointError(
            f"{checkpoint.folder}: config.json has no valid {what} {key!r} entry ({error})"
        ) from None


def _load_weights(model: nn.Module, checkpoint: Checkpoint, what: str) -> None:
    try:
        model.load_state_dict(checkpoint.state_dict, strict=True)
    except RuntimeError as error:  # missing, unexpected or mis-shaped tensors
        first_lines = " ".join(str(error).splitlines()[:3])
        raise CheckpointError(
            f"{checkpoint.folder}: weights do not fit its {what} config ({first_lines[:300]}); "
            "was it written by another version?"
        ) from None


def read_preprocess(checkpoint: Checkpoint, config: UARConfig) -> Preprocess:
    """The checkpoint's ``preprocess`` block. Checkpoints written before it existed recorded an
    ``image`` entry (size, channels, mean, std), or nothing: those translate one to one. A size other
    than the model's is refused."""

    def legacy(old: dict[str, Any]) -> Preprocess:
        image = old.get("image") or {}
        base = default_preprocess(config, int(image.get("channels", 1 if config.use_lsu else 3)))
        return dataclasses.replace(
            base, image_size=int(image.get("size", base.image_size)),
            mean=tuple(image.get("mean", base.mean)), std=tuple(image.get("std", base.std)),
        )  # fmt: skip

    preprocess = preprocess_of(checkpoint, legacy)
    if preprocess.image_size != config.image_size:
        raise CheckpointError(
            f"{checkpoint.folder}: preprocess.image_size {preprocess.image_size} differs from the model's "
            f"{config.image_size}"
        )
    return preprocess
