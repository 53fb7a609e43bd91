"""Durable, all-or-nothing writes of small folders and JSON files (checkpoints, retrieval indexes).

A folder is written complete and fsynced in a hidden sibling, then renamed into place, so a reader
sees either the old folder or the new one, never half of either; a failed write leaves the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HASH_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file, read in 1 MB chunks; OSError when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder (a folder's fsync makes the renames inside it durable)."""
    if os.name == "nt" and Path(path).is_dir():
        return  # Windows cannot open a folder for fsync; its renames are durable without it
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_json_durably(path: str | os.PathLike, data: Any) -> None:
    """Write strict JSON (no NaN) and fsync it: a rename that publishes it never publishes an empty file."""
    Path(path).write_text(json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n", "utf-8")
    fsync_path(path)


def replace_folder(folder: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Make ``folder`` hold exactly what ``fill`` writes into a fresh empty folder, atomically.

    ``fill`` writes (and fsyncs) its files into the staging folder it is given. The caller decides
    beforehand whether an existing ``folder`` may be replaced. Staging and backup are siblings named
    ``.name.tmp-*`` / ``.name.old-*`` (same filesystem, so the renames are atomic; a crash between the
    two renames leaves the old folder as ``.name.old-*`` and the new one as ``.name.tmp-*``).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging, backup = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:12]}", None
    try:
        staging.mkdir()
        fill(staging)
        fsync_path(staging)
        if folder.exists():
            backup = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(folder, backup)
        os.rename(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if backup is not None and backup.exists():
            os.rename(backup, folder)  # the new folder did not arrive: put the old one back
        raise
    fsync_path(folder.parent)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return folder
