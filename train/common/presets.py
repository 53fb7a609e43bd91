"""YAML training presets with ``--set key.path=value`` overrides, for any model command.

A preset is a nested mapping in ``train/configs/<model>_<name>.yaml``. ``--set`` replaces one existing
field (or one of the fields a command declares optional); an unknown key is refused with the keys
that exist there, so a typo cannot be silently ignored.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import yaml

from rrg_core.errors import RRGError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def load_yaml_preset(model: str, name: str, names: Collection[str]) -> dict[str, Any]:
    """``train/configs/<model>_<name>.yaml`` as a mapping with ``name`` added; an unknown name raises
    :class:`RRGError` listing ``names``."""
    path = CONFIG_DIR / f"{model}_{name}.yaml"
    if name not in names or not path.is_file():
        raise RRGError(f"unknown {model} preset {name!r}; expected one of: {', '.join(names)}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise RRGError(f"{path}: a preset must be a mapping")
    data["name"] = name
    return data


def parse_value(text: str) -> Any:
    """A ``--set`` value as YAML reads it: numbers, true/false, null, or a string. Exponents without a
    dot (``2e-3``), which YAML 1.1 leaves as strings, are numbers too."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(
    preset: dict[str, Any], items: Iterable[str], optional: Collection[str] = ()
) -> dict[str, Any]:
    """A copy of ``preset`` with each ``key.path=value`` applied; ``optional`` lists dotted keys that
    may be set although the preset leaves them out. Bad items raise :class:`RRGError`."""
    result = copy.deepcopy(preset)
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RRGError(f"--set expects key=value (e.g. stage1.lr=3e-4), got {item!r}")
        parts = key.split(".")
        node = result
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise RRGError(f"--set {key}: the preset has no section {part!r}")
            node = node[part]
        if parts[-1] not in node and key not in optional:
            known = ", ".join(sorted(k for k in node if k != "name"))
            raise RRGError(f"--set {key}: unknown key {parts[-1]!r} (known here: {known})")
        node[parts[-1]] = parse_value(raw)
    return result
