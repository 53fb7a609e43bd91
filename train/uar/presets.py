"""UAR training presets (``train/configs/uar_<name>.yaml``): one file serves ``train dvae`` and ``train uar``.

Layout of a preset:

- ``image_size`` (the model's input side; evaluation resizes to it), ``train_resize`` (training
  resizes to this and crops ``image_size`` at random; equal to ``image_size`` for no crop, which
  lets the frozen dVAE's tokens be computed once per image), ``channels`` (1: grey, as radiographs
  are), ``weight_decay``, ``beam_size``, ``ablation`` (a row of Table 2: base, lsu, lsu_cra,
  lsu_cra_tir, uar);
- ``dvae``: :class:`~rrg_core.models.uar.dvae.DVAEConfig` fields (``downsample``, ``codebook_size``,
  ``embed_dim``, ``hidden``, ``kl_weight``) and its training: ``epochs``, ``batch_size`` (images),
  ``lr``, ``temperature_start``/``temperature_end`` with ``anneal`` (share of the iterations over
  which tau decays), ``kl_warmup`` (share over which beta ramps up from 0), ``max_iterations``,
  ``reconstructions`` (how many validation images to save as PNGs), ``probe_epochs`` (0 or absent:
  none; else the epochs of :mod:`train.uar.token_probe`, which measures how much of the findings
  the tokens keep);
- ``model``: :class:`~rrg_core.models.uar.UARConfig` fields (sizes, CRA, TIR);
- ``stage1``, ``stage2``: ``epochs``, ``batch_size`` (studies), ``lr``, optional ``schedule``
  (constant or cosine), ``max_iterations`` and ``triplet_warmup`` (the share of the stage's first
  iterations in which eq 10 averages over all negatives before it takes the hardest; ours, see
  :func:`rrg_core.models.uar.cra.triplet_loss`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rrg_core.errors import RRGError
from rrg_core.models.uar.config import ABLATIONS, UARConfig
from rrg_core.models.uar.dvae import DVAEConfig
from train.common.presets import apply_overrides, load_yaml_preset
from train.common.runner import SCHEDULES

PRESETS: tuple[str, ...] = ("demo", "cpu", "paper")
STAGE_NAMES: tuple[str, ...] = ("dvae", "1", "2")
TRAIN_SECTIONS: tuple[str, ...] = ("dvae", "stage1", "stage2")

DVAE_FIELDS = frozenset(f.name for f in dataclasses.fields(DVAEConfig)) - {"in_channels", "image_size"}
DVAE_TRAINING = frozenset(
    {"epochs", "batch_size", "lr", "temperature_start", "temperature_end", "anneal", "kl_warmup",
     "max_iterations", "reconstructions", "probe_epochs"}
)  # fmt: skip
# Set from the data, the dVAE or the ablation row, never from the preset's model section.
_DERIVED = frozenset(
    {"vocab_size", "max_length", "pad_id", "bos_id", "eos_id", "views", "image_size", "codebook_size",
     "downsample", *ABLATIONS["uar"]}
)  # fmt: skip
MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(UARConfig)) - _DERIVED
# Keys --set may add although a preset file leaves them out (every model field: Table 3/4 variants,
# the lambdas of eq 13, ...); anything else must already be in the file.
_OPTIONAL = frozenset(
    {f"{s}.{k}" for s in TRAIN_SECTIONS for k in ("max_iterations", "schedule")}
    | {f"stage{k}.triplet_warmup" for k in (1, 2)}
    | {f"model.{k}" for k in MODEL_FIELDS}
    | {f"dvae.{k}" for k in DVAE_FIELDS | DVAE_TRAINING}
)


def build_preset(name: str, overrides: list[str]) -> dict[str, Any]:
    """The named preset with ``--set`` overrides applied and every section checked."""
    preset = apply_overrides(load_yaml_preset("uar", name, PRESETS), overrides, _OPTIONAL)
    check_preset(preset)
    return preset


def check_preset(preset: dict[str, Any]) -> None:
    """Refuse unknown fields and impossible values with a message naming the field."""
    for key in ("image_size", "train_resize", "channels", "beam_size"):
        _positive(preset, key, int)
    if preset["train_resize"] < preset["image_size"]:
        raise RRGError(
            f"train_resize {preset['train_resize']} is smaller than image_size {preset['image_size']}"
        )
    if preset["channels"] not in (1, 3):
        raise RRGError(f"channels must be 1 or 3, got {preset['channels']!r}")
    if preset.get("ablation") not in ABLATIONS:
        raise RRGError(f"ablation must be one of {', '.join(ABLATIONS)}, got {preset.get('ablation')!r}")
    dvae = preset["dvae"]
    _unknown(dvae, DVAE_FIELDS | DVAE_TRAINING, "dvae")
    for key in ("temperature_start", "temperature_end"):
        _positive(dvae, key, float, "dvae.")
    for key in ("anneal", "kl_warmup"):
        if not _is_share(dvae.get(key)):
            raise RRGError(f"dvae.{key} must be a share between 0 and 1, got {dvae.get(key)!r}")
    probe = dvae.get("probe_epochs", 0)
    if not isinstance(probe, int) or isinstance(probe, bool) or probe < 0:
        raise RRGError(f"dvae.probe_epochs must be a whole number >= 0 (0: no token probe), got {probe!r}")
    _unknown(preset["model"], MODEL_FIELDS, "model")
    for section in TRAIN_SECTIONS:
        _check_loop(preset[section], section)


def _check_loop(settings: dict[str, Any], section: str) -> None:
    for key, kind in (("epochs", float), ("batch_size", int), ("lr", float)):
        _positive(settings, key, kind, f"{section}.")
    limit = settings.get("max_iterations")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise RRGError(f"{section}.max_iterations must be a positive integer, got {limit!r}")
    schedule = settings.get("schedule")
    if schedule is not None and schedule not in SCHEDULES:
        raise RRGError(f"{section}.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    warmup = settings.get("triplet_warmup")
    if warmup is not None and not _is_share(warmup):
        raise RRGError(f"{section}.triplet_warmup must be a share between 0 and 1, got {warmup!r}")


def _is_share(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1


def _positive(section: dict[str, Any], key: str, kind: type, prefix: str = "") -> None:
    value = section.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise RRGError(f"{prefix}{key} must be a positive number, got {value!r}")
    if kind is int and value != int(value):
        raise RRGError(f"{prefix}{key} must be a whole number, got {value!r}")
    section[key] = kind(value)


def _unknown(section: dict[str, Any], known: frozenset[str], name: str) -> None:
    unknown = set(section) - known
    if unknown:
        raise RRGError(
            f"unknown field(s) in the preset's {name} section: {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(known))})"
        )


def dvae_config(preset: dict[str, Any]) -> DVAEConfig:
    """The dVAE of the preset: its ``dvae`` model fields at the preset's input size and channels."""
    fields = {k: v for k, v in preset["dvae"].items() if k in DVAE_FIELDS}
    try:
        return DVAEConfig(in_channels=preset["channels"], image_size=preset["image_size"], **fields)
    except (RRGError, TypeError) as error:
        raise RRGError(f"the preset's dvae section does not make a dVAE: {error}") from None


def uar_config(
    preset: dict[str, Any], *, vocab_size: int, max_length: int, views: int, dvae: DVAEConfig,
    special: tuple[int, int, int],
) -> UARConfig:  # fmt: skip
    """The UAR model of the preset for a vocabulary, a report length limit, a view count and a dVAE;
    ``special`` = (pad, bos, eos) ids. The ablation row sets the LSU/CRA/TIR switches."""
    pad, bos, eos = special
    fields = {
        **preset["model"], "vocab_size": vocab_size, "max_length": max_length, "views": views,
        "image_size": preset["image_size"], "codebook_size": dvae.codebook_size,
        "downsample": dvae.downsample, "pad_id": pad, "bos_id": bos, "eos_id": eos,
        **ABLATIONS[preset["ablation"]],
    }  # fmt: skip
    try:
        return UARConfig(**fields)
    except (RRGError, TypeError) as error:
        raise RRGError(f"the preset's model section does not make a UAR model: {error}") from None


def parse_stages(text: str) -> list[str]:
    """``"dvae,1,2"`` -> ["dvae", "1", "2"]: a subset of those, each once, in that order."""
    stages = [part.strip() for part in text.split(",") if part.strip()]
    ordered = [s for s in STAGE_NAMES if s in stages]
    if not stages or any(s not in STAGE_NAMES for s in stages) or stages != ordered:
        raise RRGError(f"--stages must list some of dvae,1,2 once each in that order, got {text!r}")
    return stages
