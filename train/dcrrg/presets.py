"""DCRRG training presets: YAML files in ``train/configs/dcrrg_<name>.yaml``, overridable by ``--set``.

A preset is a nested mapping: ``image_size``, ``beam_size``, ``weight_decay``, ``model`` (the
DCRRGConfig / DCCLIPConfig fields) and ``step1`` ... ``step4`` (``epochs``, ``batch_size``, ``lr``,
optional ``max_iterations`` and ``schedule`` (constant or cosine); Step 1 also an optional
``train_from_block``: the image encoder's layers before that EfficientNet block stay frozen, None or
absent = all train; Steps 1-2 ``text_lr``, the text encoder's own learning rate; Step 3
``balance``). ``--set step1.lr=3e-4`` replaces one existing field; a key the
preset does not have is refused, so a typo cannot be silently ignored.
"""

from __future__ import annotations

from typing import Any

from rrg_core.errors import RRGError
from train.common import presets as common
from train.common.runner import SCHEDULES

PRESETS: tuple[str, ...] = ("demo", "cpu", "paper")
STEPS: tuple[int, ...] = (1, 2, 3, 4)
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
        "step3.balance",
        "step3.text_view",
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
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise RRGError(f"step{step}.{field} must be a positive number, got {value!r}")
        settings[field] = kind(value)
    limit = settings.get("max_iterations")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise RRGError(f"step{step}.max_iterations must be a positive integer, got {limit!r}")
    schedule = settings.get("schedule")
    if schedule is not None and schedule not in SCHEDULES:
        raise RRGError(f"step{step}.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    start = settings.get("train_from_block")
    if start is not None and (
        step not in (1, 2) or not isinstance(start, int) or isinstance(start, bool) or start < 0
    ):
        raise RRGError(
            f"step{step}.train_from_block must be a non-negative integer in step1 or step2, got {start!r}"
        )
    text_lr = settings.get("text_lr")
    if text_lr is not None and (
        not isinstance(text_lr, int | float) or isinstance(text_lr, bool) or text_lr <= 0
    ):
        raise RRGError(f"step{step}.text_lr must be a positive number, got {text_lr!r}")
    return settings
