"""Typed training presets: YAML settings read into dataclasses, with ``--set key.path=value`` overrides.

A preset is ``train/configs/<model>_<name>.yaml``, read into the model's preset dataclass by
:func:`build`. The dataclasses are the one list of what may be set: a key they do not name, in the
file or in ``--set``, is refused by name with the valid keys listed, so a typo is never silently
ignored. Each value is checked against its field's type here; ranges are checked in the
dataclasses' ``__post_init__``. The measured comparisons behind each preset's values are in
docs/presets.md.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from rrg_core.errors import RRGError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class LoopSettings:
    """One training step's loop: ``epochs`` (may be fractional), ``batch_size``, ``lr``; optional
    ``max_iterations`` (a cap, for micro runs) and the learning-rate ``schedule``."""

    epochs: float
    batch_size: int
    lr: float
    max_iterations: int | None = None
    schedule: Literal["constant", "cosine"] = "constant"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "lr"):
            check(getattr(self, name) > 0, f"{name} must be a positive number, got {getattr(self, name)!r}")
        limit = self.max_iterations
        check(limit is None or limit >= 1, f"max_iterations must be a positive integer, got {limit!r}")


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


def apply_overrides(preset: Mapping[str, Any], items: Iterable[str]) -> dict[str, Any]:
    """A copy of the raw ``preset`` mapping with each ``key.path=value`` set (a missing section is
    created); whether the key exists is checked by :func:`build`, against the dataclass."""
    result = copy.deepcopy(dict(preset))
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RRGError(f"--set expects key=value (e.g. stage1.lr=3e-4), got {item!r}")
        parts = key.split(".")
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RRGError(f"--set {key}: {part!r} is a setting, not a section")
            node = child
        node[parts[-1]] = parse_value(raw)
    return result


def build(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """An instance of the dataclass ``cls`` from ``data``: every key must be a field (else the error
    names it and lists the valid keys), every value must fit the field's type (an int is taken for
    a float; nested dataclasses are built from nested mappings). ``where`` prefixes names in errors."""
    if not isinstance(data, Mapping):
        raise RRGError(f"{where.rstrip('.') or 'the preset'} must be a section (a mapping), got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RRGError(
            f"unknown preset key(s) {', '.join(where + k for k in unknown)}; valid keys"
            f"{' in ' + where.rstrip('.') if where else ''}: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], value, where + name) for name, value in data.items()}
    missing = [
        name for name, f in fields.items()
        if name not in values and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]  # fmt: skip
    if missing:
        raise RRGError(f"the preset lacks {', '.join(where + k for k in missing)}")
    try:
        return cls(**values)
    except (RRGError, TypeError, ValueError) as error:  # __post_init__'s checks, named by their path
        raise RRGError(f"{where}{error}") from None


def _coerce(hint: Any, value: Any, name: str) -> Any:
    """``value`` checked (and an int widened to float) against the type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, name)
            except RRGError as error:
                errors.append(str(error))
        raise RRGError(errors[0] if len(errors) == 1 else f"{name} must be {_describe(hint)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise RRGError(f"{name} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, name + ".")
    if hint is bool:
        if not isinstance(value, bool):
            raise RRGError(f"{name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise RRGError(f"{name} must be a whole number, got {value!r}")
        return value
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise RRGError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise RRGError(f"{name} must be a string, got {value!r}")
        return value
    if hint is Any:
        return value
    raise TypeError(f"{name}: unsupported preset field type {hint!r}")


def _describe(hint: Any) -> str:
    return " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(hint))


def as_dict(preset: Any) -> dict[str, Any]:
    """The resolved preset as a plain nested dict (what config.json records under training.settings)."""
    return dataclasses.asdict(preset)


def check(condition: bool, message: str) -> None:
    """Raise :class:`RRGError` with ``message`` unless ``condition`` (for ``__post_init__`` checks)."""
    if not condition:
        raise RRGError(message)


def model_fields(*configs: type, exclude: Collection[str] = ()) -> list[tuple[str, Any, dataclasses.Field]]:
    """The init fields of model config dataclasses as ``make_dataclass`` specs, each with the config's
    own default, minus ``exclude`` (fields set from the data); a name in several configs once.

    A preset's model section is typed by the model's config itself, so that every config field can
    be set and none is listed twice by hand."""
    specs, seen = [], set()
    for config in configs:
        hints = typing.get_type_hints(config)
        for f in dataclasses.fields(config):
            if not f.init or f.name in exclude or f.name in seen or dataclasses.is_dataclass(hints[f.name]):
                continue
            seen.add(f.name)
            default = (
                dataclasses.field(default=f.default)
                if f.default is not dataclasses.MISSING
                else dataclasses.field(default_factory=f.default_factory)
            )
            specs.append((f.name, hints[f.name], default))
    return specs
