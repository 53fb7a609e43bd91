"""Checks of everything a caller hands the store, before any of it reaches the database.

Each check returns the clean value or raises :class:`StoreError` naming the field and what to do.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Any

from rrg_core.errors import RRGError
from rrg_core.observations import OBSERVATIONS, canonical_name, labels_to_json
from rrg_core.store.records import REVIEW_STATUSES, NewDraft, StoreError, ViewImage

MAX_NAME = 128
MAX_REPORT = 20_000
MAX_COMMENT = 5_000
MAX_JSON_BYTES = 1_000_000
MAX_PNG_BYTES = 32 * 1024 * 1024
MAX_VIEWS = 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HASH = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NAME_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f<>]")

#: A checked view: its name, PNG bytes, width and height.
CheckedView = tuple[str, bytes, int, int]


def identifier(value: object, what: str, minimum: int = 1) -> int:
    """A whole number (a database id or a version) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(f"{what} must be a whole number, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise StoreError(f"{what} must be at least {minimum}, got {value}")
    return value


def name(value: object, what: str) -> str:
    """A person's or model's name: one line of 1..128 printable characters, no markup brackets."""
    if not isinstance(value, str):
        raise StoreError(f"{what} must be text, got {type(value).__name__}")
    clean = value.strip()
    if not clean:
        raise StoreError(f"{what} is empty; enter a name")
    if len(clean) > MAX_NAME:
        raise StoreError(f"{what} is {len(clean)} characters long; at most {MAX_NAME} are allowed")
    if _NAME_FORBIDDEN.search(clean):
        raise StoreError(f"{what} {clean[:40]!r} contains control characters or < >; use plain text")
    return clean


def text(value: object, what: str, limit: int) -> str:
    """Free text (a report, a comment), kept as typed; at most ``limit`` characters, no NUL bytes."""
    if not isinstance(value, str):
        raise StoreError(f"{what} must be text, got {type(value).__name__}")
    if len(value) > limit:
        raise StoreError(f"{what} is {len(value):,} characters long; at most {limit:,} are allowed")
    if _CONTROL.search(value):
        raise StoreError(f"{what} contains control characters (other than tabs and line breaks); remove them")
    return value


def status(value: object) -> str:
    """A review status: draft or final."""
    if not isinstance(value, str) or value.strip().lower() not in REVIEW_STATUSES:
        raise StoreError(f"review status must be one of {', '.join(REVIEW_STATUSES)}, got {value!r}")
    return value.strip().lower()


def content_hash(value: object, what: str = "content hash") -> str:
    """A sha256 hex digest (64 hex digits)."""
    if not isinstance(value, str) or not _HASH.match(value.strip().lower()):
        raise StoreError(f"{what} must be a sha256 hex digest (64 hex digits), got {value!r}")
    return value.strip().lower()


def source_name(value: object) -> str | None:
    """A display name for a study: the base name only (folders can name patients), one line."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise StoreError(f"source name must be text, got {type(value).__name__}")
    base = PurePath(value.replace("\\", "/")).name.strip()
    if _CONTROL.search(base) or "\n" in base or "\r" in base or "\t" in base:
        raise StoreError("source name contains control characters; use a plain file name")
    return base[:255] or None


def view_name(value: object) -> str:
    """A view's name (frontal, lateral, PA, ...): 1..32 plain characters."""
    clean = name(value, "view name")
    if len(clean) > 32:
        raise StoreError(f"view name {clean[:40]!r} is longer than 32 characters")
    return clean


def png(value: object, what: str) -> tuple[bytes, int, int]:
    """PNG bytes and their width and height, read from the IHDR chunk."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise StoreError(f"{what} must be PNG bytes, got {type(value).__name__}")
    data = bytes(value)
    if len(data) > MAX_PNG_BYTES:
        raise StoreError(f"{what} is {len(data):,} bytes; at most {MAX_PNG_BYTES:,} are stored")
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise StoreError(f"{what} is not a PNG image; store the de-identified display image as PNG")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        raise StoreError(f"{what} has no pixels ({width}x{height})")
    return data, width, height


def json_value(value: Any, what: str) -> Any:
    """A JSON value (no NaN or infinity, which PostgreSQL's JSON refuses), as plain Python data."""
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise StoreError(f"{what} must be plain JSON data (no NaN, no objects): {error}") from None
    if len(encoded.encode()) > MAX_JSON_BYTES:
        raise StoreError(f"{what} is larger than {MAX_JSON_BYTES:,} bytes of JSON")
    if "\\u0000" in encoded:
        raise StoreError(f"{what} contains a NUL character")
    return json.loads(encoded)


def labels(value: object) -> dict[str, int | None]:
    """The 14 corrected labels (1, 0, -1 or None); None means every observation unmentioned."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise StoreError(f"labels must map observation names to 1, 0, -1 or None, got {type(value).__name__}")
    try:
        return labels_to_json(value)
    except RRGError as error:
        raise StoreError(f"labels: {error}") from None


def observations(values: Iterable[object], what: str) -> list[str]:
    """Observation names, canonical, unique, in CheXpert order."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise StoreError(f"{what} must be a list of observation names, got {type(values).__name__}")
    try:
        names = {canonical_name(str(v)) for v in values}
    except RRGError as error:
        raise StoreError(f"{what}: {error}") from None
    return [n for n in OBSERVATIONS if n in names]


def views(value: object) -> list[CheckedView]:
    """A study's views: a list of 1..8 :class:`ViewImage`, each a named PNG (with its size, from the PNG)."""
    if isinstance(value, ViewImage) or not isinstance(value, Sequence) or not value:
        raise StoreError("a study needs at least one view image (a list of ViewImage)")
    if len(value) > MAX_VIEWS:
        raise StoreError(f"a study has at most {MAX_VIEWS} views, got {len(value)}")
    checked = []
    for index, view in enumerate(value):
        if not isinstance(view, ViewImage):
            raise StoreError(f"view {index} must be a ViewImage, got {type(view).__name__}")
        data, width, height = png(view.png, f"view {index} ({view.view!r})")
        checked.append((view_name(view.view), data, width, height))
    return checked


def new_drafts(value: object) -> list[NewDraft]:
    """Drafts to add: a list of at least one :class:`NewDraft`, with clean names and JSON observations."""
    if isinstance(value, NewDraft) or not isinstance(value, Sequence) or not value:
        raise StoreError("add_drafts needs a list of at least one NewDraft")
    checked = []
    for index, draft in enumerate(value):
        if not isinstance(draft, NewDraft):
            raise StoreError(f"draft {index} must be a NewDraft, got {type(draft).__name__}")
        observations = json_value(
            {} if draft.observations is None else draft.observations, f"draft {index} observations"
        )
        checked.append(
            NewDraft(
                model_name=name(draft.model_name, f"draft {index} model name"),
                model_version=name(draft.model_version, f"draft {index} model version"),
                checkpoint_hash=name(draft.checkpoint_hash, f"draft {index} checkpoint hash"),
                text=text(draft.text, f"draft {index} text", MAX_REPORT),
                observations=observations,
            )
        )
    return checked
