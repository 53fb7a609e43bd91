"""The 14 CheXpert observations and the values a report label can take.

A report's labels are a mapping from observation name to one of
``POSITIVE`` (1), ``NEGATIVE`` (0), ``UNCERTAIN`` (-1) or ``None`` (unmentioned),
the CheXpert labeler's convention. Everything that stores, compares or trains on
labels goes through the helpers here so the conventions live in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

from rrg_core.errors import RRGError

OBSERVATIONS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
"""The observations in CheXpert's column order (the order of every label vector here)."""

NUM_OBSERVATIONS = len(OBSERVATIONS)

NO_FINDING = "No Finding"
FINDINGS: tuple[str, ...] = tuple(name for name in OBSERVATIONS if name != NO_FINDING)
"""The 13 findings: every observation but No Finding (which says there are none)."""


class Label(IntEnum):
    """A mentioned observation's value; an unmentioned one is ``None``."""

    POSITIVE = 1
    NEGATIVE = 0
    UNCERTAIN = -1


LabelValue = Label | None
LabelDict = dict[str, LabelValue]

_INDEX = {name: i for i, name in enumerate(OBSERVATIONS)}
_BY_KEY = {name.lower().replace("_", " "): name for name in OBSERVATIONS}


def canonical_name(name: str) -> str:
    """Return the canonical spelling of an observation name.

    Case, underscores and surrounding spaces are forgiven ("pleural_effusion" ->
    "Pleural Effusion"); anything else raises :class:`RRGError`.
    """
    key = str(name).strip().lower().replace("_", " ")
    if key not in _BY_KEY:
        raise RRGError(f"unknown observation {name!r}; expected one of: {', '.join(OBSERVATIONS)}")
    return _BY_KEY[key]


def observation_index(name: str) -> int:
    """Position of an observation in :data:`OBSERVATIONS`."""
    return _INDEX[canonical_name(name)]


def parse_label(value: object) -> LabelValue:
    """Read one label value: 1/0/-1 (ints, floats or their strings); None, NaN or '' = unmentioned."""
    if value is None or isinstance(value, Label):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text == "" or text.lower() in {"nan", "none"}:
            return None
        try:
            value = float(text)
        except ValueError:
            raise RRGError(f"label value {value!r} is not one of 1, 0, -1 or blank") from None
    if isinstance(value, bool):
        raise RRGError(f"label value {value!r} is not one of 1, 0, -1 or blank")
    if isinstance(value, float) and value != value:  # NaN, as pandas writes blanks
        return None
    if value in (1, 0, -1):
        return Label(int(value))  # type: ignore[arg-type]
    raise RRGError(f"label value {value!r} is not one of 1, 0, -1 or blank")


def validate_labels(labels: Mapping[str, object]) -> LabelDict:
    """Check a label mapping and return it complete: all 14 keys, canonical names, typed values.

    Observations missing from ``labels`` are unmentioned (``None``).
    """
    if not isinstance(labels, Mapping):
        raise RRGError(f"labels must be a mapping of observation name to value, got {type(labels).__name__}")
    result: LabelDict = dict.fromkeys(OBSERVATIONS)
    for name, value in labels.items():
        result[canonical_name(name)] = parse_label(value)
    return result


def binary_targets(labels: Mapping[str, object]) -> tuple[list[float], list[bool]]:
    """Training targets as both papers use them: positive 1, negative and unmentioned 0.

    Returns ``(targets, keep)`` in :data:`OBSERVATIONS` order, where ``keep`` is
    False for uncertain labels, which training drops (DCRRG section 3.1).
    """
    complete = validate_labels(labels)
    targets = [1.0 if complete[name] == Label.POSITIVE else 0.0 for name in OBSERVATIONS]
    keep = [complete[name] != Label.UNCERTAIN for name in OBSERVATIONS]
    return targets, keep


def is_positive(value: object) -> bool:
    """The clinical-efficacy reading of a label: positive, or not (uncertain counts as not)."""
    return parse_label(value) == Label.POSITIVE


def positive_flags(labels: Mapping[str, object]) -> list[bool]:
    """The 14 observations' :func:`is_positive` readings in :data:`OBSERVATIONS` order (absent keys
    count as unmentioned): a study's positive-finding set, as retrieval relevance compares them."""
    return [is_positive(labels.get(name)) for name in OBSERVATIONS]


def labels_to_json(labels: Mapping[str, object]) -> dict[str, int | None]:
    """All 14 labels as plain JSON values (1, 0, -1 or None), in :data:`OBSERVATIONS` order."""
    complete = validate_labels(labels)
    return {name: None if value is None else int(value) for name, value in complete.items()}
