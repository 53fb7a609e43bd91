"""DCRRG training presets: YAML files in ``train/configs/dcrrg_<name>.yaml``, overridable by ``--set``.

A preset is a nested mapping: ``image_size``, ``beam_size``, ``weight_decay``, ``model`` (the
DCRRGConfig / DCCLIPConfig fields) and ``step1`` ... ``step4`` (``epochs``, ``batch_size``, ``lr``,
optional ``max_iterations`` and ``schedule`` (constant or cosine); Step 1 also an optional
``train_from_block``: the image encoder's layers before that EfficientNet block stay frozen, None or
absent = all train; Steps 1-2 ``text_lr``, the text encoder's own learning rate, and
``text_train_from_layer``, the text encoder's layers before it stay frozen; Step 3
``balance``; Step 4 ``mode``, one of :data:`STEP4_MODES`, which ``--step4`` overrides, and
``description_weight``, the weight of Step 3's loss rehearsed in Step 4 so that a retrained decoder
keeps its descriptions (absent: 1 in ``decoder`` mode, else 0; always 0 in ``pt``; see
:func:`train.dcrrg.steps.step4`)).
``--set step1.lr=3e-4`` replaces one existing field; a key the preset does not have is refused, so
a typo cannot be silently ignored.
"""

from __future__ import annotations

from typing import Any

from rrg_core.errors import RRGError
from train.common import presets as common
from train.common.runner import SCHEDULES

PRESETS: tuple[str, ...] = ("demo", "cpu", "paper")
STEPS: tuple[int, ...] = (1, 2, 3, 4)
# Step 4's forms: prompt tuning (the paper's), full fine-tuning (Table 4), or the decoder side alone.
STEP4_MODES: tuple[str, ...] = ("pt", "fft", "decoder")
# Fields that may be absent from a preset but still set (None means "not given").
_OPTIONAL = (
    {f"step{k}.max_iterations" for k in STEPS}
    | {f"step{k}.schedule" for k in STEPS}
    | {
        "step1.train_from_block",
        "step2.train_from_block",
        "step2.step1_weight",
        "step1.text_lr",
        "step2.text_lr",
        "step1.text_train_from_layer",
        "step2.text_train_from_layer",
        "step3.balance",
        "step3.text_view",
        "step4.mode",
        "step4.description_weight",
    }
)


def load_preset(name: str) -> dict[str, Any]:
    """``train/configs/dcrrg_<name>.yaml``; an unknown name raises :class:`RRGError` listing them all."""
    return common.load_yaml_preset("dcrrg", name, PRESETS)


def apply_overrides(preset: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """A copy of ``preset`` with each ``key.path=value`` applied; bad items raise :class:`RRGError`."""
    return common.apply_overrides(preset, items, _OPTIONAL)


def step_settings(preset: dict[str, Any], step: int) -> dict[str, Any]:
    """One step's settings, checked: positive epochs, batch size and learning rate."""
    settings = dict(preset[f"step{step}"])
    checks = {"epochs": float, "batch_size": int, "lr": float}
    for field, kind in checks.items():
        value = settings.get(field)
        if not _is_number(value) or value <= 0:
            raise RRGError(f"step{step}.{field} must be a positive number, got {value!r}")
        settings[field] = kind(value)
    limit = settings.get("max_iterations")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise RRGError(f"step{step}.max_iterations must be a positive integer, got {limit!r}")
    schedule = settings.get("schedule")
    if schedule is not None and schedule not in SCHEDULES:
        raise RRGError(f"step{step}.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    for field in ("train_from_block", "text_train_from_layer"):  # the encoders train in Steps 1-2 only
        value = settings.get(field)
        if value is not None and (step not in (1, 2) or not _is_int(value) or value < 0):
            raise RRGError(f"step{step}.{field} must be an integer >= 0 in step1 or step2, got {value!r}")
    mode = settings.get("mode")
    if mode is not None and (step != 4 or mode not in STEP4_MODES):
        raise RRGError(f"step{step}.mode must be one of {', '.join(STEP4_MODES)} in step4, got {mode!r}")
    weight = settings.get("description_weight")
    if weight is not None and (step != 4 or not _is_number(weight) or weight < 0):
        raise RRGError(f"step{step}.description_weight must be a number >= 0 in step4, got {weight!r}")
    text_lr = settings.get("text_lr")
    if text_lr is not None and not (_is_number(text_lr) and text_lr > 0):
        raise RRGError(f"step{step}.text_lr must be a positive number, got {text_lr!r}")
    return settings


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def step4_mode(preset: dict[str, Any], requested: str | None) -> str:
    """Step 4's form: ``--step4`` when given, else the preset's ``step4.mode``, else prompt tuning."""
    return requested or preset["step4"].get("mode") or "pt"
