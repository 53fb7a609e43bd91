"""Checkpoints: a folder with ``config.json``, ``vocab.json``, ``model.safetensors``, ``metrics.json``.

- ``config.json``: ``{"format": "rrg-checkpoint", "format_version", "kind", "code_version", "preset",
  "data_fingerprint", "created", "has_vocab", "config": {hyper-parameters}}``.
- ``vocab.json``: :meth:`Vocabulary.to_dict`; absent for models without words (the dVAE).
- ``model.safetensors``: the state dict under its own names. Tensors that are the very same
  tensor under two names (tied weights) are stored once; the header's metadata key
  ``rrg_tied`` maps each alias to the stored name and loading re-ties them.
- ``metrics.json``: evaluation results, ``{}`` until :func:`update_metrics` adds some.

Nothing is ever unpickled: tensors come from safetensors and the rest is JSON, so a
checkpoint from someone else cannot run code here. Saves are atomic: the new folder is
written and fsynced beside the old one and only then swapped in, so a crash leaves either
the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from rrg_core import __version__
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import DatasetError, RRGError

logger = logging.getLogger(__name__)

FORMAT = "rrg-checkpoint"
FORMAT_VERSION = 1
#: Model kinds a checkpoint may hold; :func:`register_kind` adds one (a typo in ``kind`` is refused).
KNOWN_KINDS: set[str] = {"dcrrg", "uar", "dvae"}
ENV_VAR = "RRG_CHECKPOINTS"

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
_TIED_KEY = "rrg_tied"
_HASH_CHUNK = 1 << 20


class CheckpointError(RRGError):
    """A checkpoint folder is missing, incomplete, corrupt, of another kind or of a newer format."""


@dataclasses.dataclass(frozen=True, eq=False)
class Checkpoint:
    """A loaded checkpoint. ``sha256`` (the "checkpoint hash") identifies the weights in the review store."""

    folder: Path
    kind: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor] = dataclasses.field(repr=False)
    vocab: Vocabulary | None = dataclasses.field(repr=False)
    metrics: dict[str, Any]
    preset: str | None
    data_fingerprint: str | None
    code_version: str
    created: str
    sha256: str
    format_version: int = FORMAT_VERSION


def register_kind(kind: str) -> None:
    """Allow checkpoints of a new model ``kind`` (lower-case identifier, e.g. ``"retrieval"``)."""
    if not isinstance(kind, str) or not kind.isidentifier() or kind != kind.lower():
        raise CheckpointError(f"a checkpoint kind must be a lower-case identifier, got {kind!r}")
    KNOWN_KINDS.add(kind)


# ----------------------------------------------------------------------------------------------- saving


def save_checkpoint(
    folder: str | os.PathLike,
    *,
    kind: str,
    config: Mapping[str, Any] | Any,
    state_dict: Mapping[str, torch.Tensor],
    vocab: Vocabulary | None = None,
    metrics: Mapping[str, Any] | None = None,
    preset: str | None = None,
    data_fingerprint: str | None = None,
) -> Path:
    """Write a checkpoint to ``folder`` atomically and return its path.

    ``config`` is a JSON-serialisable mapping of hyper-parameters or a dataclass instance
    (tuples come back as lists). An existing checkpoint in ``folder`` is replaced only once the
    new one is complete on disk; a folder that holds something else is refused rather than
    deleted.
    """
    folder = Path(folder)
    if kind not in KNOWN_KINDS:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; known: {sorted(KNOWN_KINDS)}")
    if vocab is not None and not isinstance(vocab, Vocabulary):
        raise CheckpointError(f"vocab must be a Vocabulary or None, got {type(vocab).__name__}")
    header = _config_document(kind, config, vocab, preset, data_fingerprint)
    tensors, tied = _tensors_for_saving(state_dict)
    _refuse_foreign_folder(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # The temporary sibling is on the same filesystem, so the final rename is atomic; its name
    # starts with "." so find_checkpoints never mistakes an unfinished save for a checkpoint.
    staging = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        _write_json(staging / CONFIG_FILE, header)
        if vocab is not None:
            _write_json(staging / VOCAB_FILE, vocab.to_dict())
        _write_json(staging / METRICS_FILE, _jsonable_metrics(metrics or {}))
        metadata = {_TIED_KEY: json.dumps(tied, sort_keys=True)} if tied else None
        safetensors.torch.save_file(tensors, staging / WEIGHTS_FILE, metadata=metadata)
        _fsync_path(staging / WEIGHTS_FILE)
        _fsync_path(staging)
        _swap_into_place(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("saved %s checkpoint to %s (%d tensors)", kind, folder, len(state_dict))
    return folder


def _config_document(
    kind: str, config: Any, vocab: Vocabulary | None, preset: str | None, fingerprint: str | None
) -> dict[str, Any]:
    """The content of config.json; checks the hyper-parameters are plain JSON now, not at load time."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise CheckpointError(f"config must be a mapping or a dataclass, got {type(config).__name__}")
    for name, value in (("preset", preset), ("data_fingerprint", fingerprint)):
        if value is not None and not isinstance(value, str):
            raise CheckpointError(f"{name} must be a string or None, got {type(value).__name__}")
    try:
        # A round trip through JSON turns tuples into lists now, so a saved config equals a loaded one.
        plain = json.loads(json.dumps(dict(config), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"config is not JSON-serialisable: {error}") from error
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "code_version": __version__,
        "preset": preset,
        "data_fingerprint": fingerprint,
        "created": _now().isoformat(timespec="microseconds"),
        "has_vocab": vocab is not None,
        "config": plain,
    }


def _now() -> datetime:
    """The current UTC time (a function so tests can pin it)."""
    return datetime.now(UTC)


def _tensors_for_saving(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous CPU tensors to store, and ``{alias: stored name}`` for tied weights.

    safetensors refuses tensors that share memory. Names for the very same view of the same
    storage (a tied embedding and output layer) are stored once and re-tied on load; tensors that
    merely overlap (a slice of another) are cloned, since no alias can express them.
    """
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise CheckpointError("state_dict must be a non-empty mapping of names to tensors")
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen_views: dict[tuple, str] = {}
    used_storages: set[int] = set()
    for name, tensor in state_dict.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"state_dict entry {name!r} is not a tensor under a string name")
        if tensor.device.type == "meta":
            raise CheckpointError(f"tensor {name!r} is on the meta device and has no values to save")
        view = _view_key(tensor)
        if view is not None and view in seen_views:
            tied[name] = seen_views[view]
            continue
        if view is not None:
            seen_views[view] = name
        # Detect sharing on the original device: moving to the CPU would hide ties between GPU tensors.
        stored = tensor.detach().to("cpu").contiguous()
        pointer = stored.untyped_storage().data_ptr()
        if stored.numel() and pointer in used_storages:
            stored = stored.clone()
            pointer = stored.untyped_storage().data_ptr()
        if stored.numel():
            used_storages.add(pointer)
        tensors[name] = stored
    return tensors, tied


def _view_key(tensor: torch.Tensor) -> tuple | None:
    """What makes two tensors the same view of the same memory; None for empty tensors (no memory)."""
    if tensor.numel() == 0:
        return None
    return (
        tensor.device,
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tuple(tensor.stride()),
        tensor.dtype,
    )


def _refuse_foreign_folder(folder: Path) -> None:
    """Refuse to replace anything but an earlier checkpoint or an empty folder (it would be deleted)."""
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir() or folder.is_symlink():
        raise CheckpointError(f"cannot save a checkpoint to {folder}: it exists and is not a folder")
    if any(folder.iterdir()) and _read_header_or_none(folder) is None:
        raise CheckpointError(
            f"cannot save a checkpoint to {folder}: the folder holds other files and is not a checkpoint"
        )


def _swap_into_place(staging: Path, folder: Path) -> None:
    """Make the complete ``staging`` folder appear at ``folder``, removing what was there."""
    if not folder.exists():
        try:
            os.rename(staging, folder)
            _fsync_path(folder.parent)
            return
        except OSError as error:
            # Another save created the folder meanwhile: fall through and replace it.
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if _exchange(staging, folder):
        # One atomic step: ``folder`` now holds the new checkpoint and ``staging`` the old one.
        _fsync_path(folder.parent)
        shutil.rmtree(staging, ignore_errors=True)
        return
    # No atomic exchange here: two renames. A crash between them leaves both complete copies as
    # hidden siblings (named in load_checkpoint's "not found" message), never a half checkpoint.
    backup = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(folder, backup)
    os.rename(staging, folder)
    _fsync_path(folder.parent)
    shutil.rmtree(backup, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically with Linux's ``renameat2(RENAME_EXCHANGE)``; False where unavailable."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # the filesystem or kernel cannot exchange; the fallback still never loses data
    raise OSError(code, f"cannot replace {second}: {os.strerror(code)}")


@functools.cache
def _renameat2() -> Any:
    """libc's renameat2, or None off Linux or on a libc without it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _write_json(path: Path, data: Any) -> None:
    """Write JSON and fsync it, so the rename that publishes it never publishes an empty file."""
    text = json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes the renames inside it durable)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _jsonable_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics as strict JSON: numpy/torch scalars become numbers and NaN/inf become null.

    An undefined score (no positive label in a split) is NaN; refusing it would waste an
    evaluation that took an hour, and strict JSON has no NaN.
    """
    if not isinstance(metrics, Mapping):
        raise CheckpointError(f"metrics must be a mapping, got {type(metrics).__name__}")

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(key): convert(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [convert(item) for item in value]
        if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if value is None or isinstance(value, str | int | float | bool):
            return value
        raise CheckpointError(f"metric value {value!r} is not a number, string, list or mapping")

    return convert(metrics)


# ---------------------------------------------------------------------------------------------- loading


def load_checkpoint(
    folder: str | os.PathLike, *, expected_kind: str | None = None, device: str | torch.device = "cpu"
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; anything doubtful raises CheckpointError."""
    folder = Path(folder)
    header = _read_header(folder)
    kind = header["kind"]
    if expected_kind is not None and kind != expected_kind:
        raise CheckpointError(f"checkpoint {folder} is a {kind!r} checkpoint, expected {expected_kind!r}")
    target = _parse_device(device)
    state_dict, sha256 = _read_weights(folder)
    if target.type != "cpu":
        state_dict = _move_keeping_ties(state_dict, target)
    return Checkpoint(
        folder=folder,
        kind=kind,
        config=header["config"],
        state_dict=state_dict,
        vocab=_read_vocab(folder, header),
        metrics=_read_metrics(folder),
        preset=header.get("preset"),
        data_fingerprint=header.get("data_fingerprint"),
        code_version=str(header.get("code_version", "unknown")),
        created=str(header.get("created", "")),
        sha256=sha256,
        format_version=header["format_version"],
    )


def _read_header(folder: Path) -> dict[str, Any]:
    """config.json, checked: our format, a version this code reads, a kind and a config mapping."""
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} not found{_leftover_hint(folder)}")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a checkpoint: {CONFIG_FILE} is missing")
    try:
        header = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {folder}: {CONFIG_FILE} is not valid JSON ({error})") from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(
            f"{folder} is not a rrg-review checkpoint ({CONFIG_FILE} lacks format {FORMAT!r})"
        )
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"checkpoint {folder}: malformed format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {folder} has format version {version}, written by a newer rrg-review; upgrade "
            f"(this version {__version__} reads format {FORMAT_VERSION})"
        )
    if not isinstance(header.get("kind"), str) or not header["kind"]:
        raise CheckpointError(f"checkpoint {folder}: {CONFIG_FILE} names no model kind")
    if not isinstance(header.get("config"), dict):
        raise CheckpointError(f"checkpoint {folder}: {CONFIG_FILE} has no 'config' mapping")
    return header


def _read_header_or_none(folder: Path) -> dict[str, Any] | None:
    """The checked header, or None when ``folder`` is not a readable checkpoint."""
    try:
        return _read_header(folder)
    except CheckpointError:
        return None


def _leftover_hint(folder: Path) -> str:
    """Name the copies an interrupted save may have left, so the user can rename one back."""
    if not folder.parent.is_dir():
        return ""
    leftovers = sorted(folder.parent.glob(f".{folder.name}.old-*")) + sorted(
        folder.parent.glob(f".{folder.name}.tmp-*")
    )
    if not leftovers:
        return ""
    return f" (an interrupted save left {', '.join(str(p) for p in leftovers)}: rename one to {folder.name})"


def _parse_device(device: str | torch.device) -> torch.device:
    """The target device, refused early when this machine does not have it."""
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise CheckpointError(f"unknown device {device!r}: {error}") from error
    if target.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"cannot load the checkpoint onto {device!r}: no CUDA device is available")
    return target


def _read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict (ties restored) and the sha256 of exactly the bytes it came from."""
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder}: {WEIGHTS_FILE} is missing")
    for _attempt in range(3):
        before = _file_identity(path)
        sha256 = checkpoint_hash(folder)
        state_dict = _read_safetensors(folder, path)
        # A save replacing the folder between hashing and reading would pair one file's hash with
        # another's weights, and the review store would then credit drafts to the wrong weights.
        if _file_identity(path) == before:
            return state_dict, sha256
    raise CheckpointError(f"checkpoint {folder} kept changing while it was read; try again")


def _read_safetensors(folder: Path, path: Path) -> dict[str, torch.Tensor]:
    """Tensors from the safetensors file (never pickle); a truncated or foreign file is refused."""
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (safetensors.SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {folder}: {WEIGHTS_FILE} is corrupt or not a safetensors file ({error})"
        ) from error
    try:
        tied = json.loads(metadata.get(_TIED_KEY, "{}"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"checkpoint {folder}: malformed tied-weight table ({error})") from error
    if not isinstance(tied, dict):
        raise CheckpointError(f"checkpoint {folder}: malformed tied-weight table")
    for alias, stored in tied.items():
        if alias in tensors or stored not in tensors:
            raise CheckpointError(f"checkpoint {folder}: tied weight {alias!r} -> {stored!r} does not fit")
        tensors[alias] = tensors[stored]
    return tensors


def _move_keeping_ties(state_dict: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move tensors to ``device``; names that were one tensor stay one tensor."""
    moved: dict[int, torch.Tensor] = {}
    result = {}
    for name, tensor in state_dict.items():
        if id(tensor) not in moved:
            moved[id(tensor)] = tensor.to(device)
        result[name] = moved[id(tensor)]
    return result


def _file_identity(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is replaced or rewritten."""
    status = path.stat()
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def _read_vocab(folder: Path, header: dict[str, Any]) -> Vocabulary | None:
    """vocab.json as a Vocabulary; None for checkpoints saved without one."""
    path = folder / VOCAB_FILE
    if not header.get("has_vocab", path.exists()):
        return None
    if not path.is_file():
        raise CheckpointError(f"checkpoint {folder}: {VOCAB_FILE} is missing")
    try:
        return Vocabulary.load(path)
    except RRGError as error:
        raise CheckpointError(f"checkpoint {folder}: {VOCAB_FILE} is malformed ({error})") from error


def _read_metrics(folder: Path) -> dict[str, Any]:
    """metrics.json, or {} when absent (metrics are a report, not needed to run the model)."""
    path = folder / METRICS_FILE
    if not path.exists():
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {folder}: {METRICS_FILE} is not valid JSON ({error})") from error
    if not isinstance(metrics, dict):
        raise CheckpointError(f"checkpoint {folder}: {METRICS_FILE} is not a JSON object")
    return metrics


# --------------------------------------------------------------------------------------- hashes, lookup


def checkpoint_hash(folder: str | os.PathLike) -> str:
    """sha256 (hex) of the checkpoint's model.safetensors, read in 1 MB chunks and cached per file version."""
    path = Path(folder) / WEIGHTS_FILE
    try:
        identity = _file_identity(path)
    except OSError as error:
        raise CheckpointError(f"checkpoint {folder}: cannot read {WEIGHTS_FILE} ({error})") from error
    return _hash_file(str(path.resolve()), identity)


@functools.lru_cache(maxsize=64)
def _hash_file(path: str, identity: tuple[int, int, int, int]) -> str:
    """Cached by path and file identity, so a rewritten file is hashed again."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def data_fingerprint(annotation_path: str | os.PathLike) -> str:
    """A short (16 hex digits) sha256 of an annotation file, or of ``annotation.json`` in a data folder."""
    path = Path(annotation_path)
    if path.is_dir():
        path = path / "annotation.json"
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as error:
        raise DatasetError(f"cannot fingerprint annotation file {path}: {error}") from error
    return digest.hexdigest()[:16]


def default_checkpoint_root() -> Path | None:
    """The folder named by the ``RRG_CHECKPOINTS`` environment variable, or None when unset."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def find_checkpoints(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """The newest checkpoint of each kind in ``root`` (itself or its direct sub-folders).

    ``root`` defaults to ``RRG_CHECKPOINTS``. Unreadable folders are skipped with a warning,
    so one broken checkpoint does not keep the app from starting with the others.
    """
    base = Path(root).expanduser() if root is not None else default_checkpoint_root()
    if base is None:
        raise CheckpointError(f"no checkpoint folder given: pass --checkpoints DIR or set {ENV_VAR}")
    if not base.is_dir():
        raise CheckpointError(f"checkpoint folder {base} not found")
    best: dict[str, tuple[datetime, str, Path]] = {}
    for folder in _candidate_folders(base):
        try:
            header = _read_header(folder)
        except CheckpointError as error:
            logger.warning("skipping %s: %s", folder, error)
            continue
        rank = (_created_time(header), folder.name, folder)
        if header["kind"] not in best or rank[:2] > best[header["kind"]][:2]:
            best[header["kind"]] = rank
    return {kind: rank[2] for kind, rank in sorted(best.items())}


def _candidate_folders(base: Path) -> Iterator[Path]:
    """``base`` if it is a checkpoint, and its visible sub-folders that have a config.json."""
    if (base / CONFIG_FILE).is_file():
        yield base
    for child in sorted(base.iterdir()):
        # Hidden siblings are unfinished or replaced saves (".name.tmp-*", ".name.old-*").
        if child.is_dir() and not child.name.startswith(".") and (child / CONFIG_FILE).is_file():
            yield child


def _created_time(header: dict[str, Any]) -> datetime:
    """The header's creation time; the oldest possible when missing or unreadable."""
    try:
        created = datetime.fromisoformat(str(header.get("created")))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return created if created.tzinfo else created.replace(tzinfo=UTC)


# -------------------------------------------------------------------------------------------- metrics


def update_metrics(folder: str | os.PathLike, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``metrics`` into the checkpoint's metrics.json atomically and return the result.

    Nested mappings merge key by key, so ``{"test": {"bleu4": ...}}`` and a later
    ``{"test": {"ce_f1": ...}}`` both survive; other values replace the old ones.
    """
    folder = Path(folder)
    _read_header(folder)
    update = _jsonable_metrics(metrics)
    with _folder_lock(folder):
        merged = _deep_merge(_read_metrics(folder), update)
        temporary = folder / f".{METRICS_FILE}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            _write_json(temporary, merged)
            os.replace(temporary, folder / METRICS_FILE)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_path(folder)
    return merged


def _deep_merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` updated by ``new``, recursing into mappings present in both."""
    merged = dict(old)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the folder, so two evaluations updating metrics at once lose nothing."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; updates are still atomic, only not serialised
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
