"""Checkpoints: a folder with ``config.json``, ``vocab.json``, ``model.safetensors``, ``metrics.json``.

- ``config.json``: ``{"format": "rrg-checkpoint", "format_version", "kind", "code_version", "preset",
  "data_fingerprint", "created", "has_vocab", "config": {hyper-parameters}}``.
- ``vocab.json``: :meth:`Vocabulary.to_dict`; absent for models without words (the dVAE).
- ``model.safetensors``: the state dict. A tensor under two names (tied weights) is stored once;
  the metadata key ``rrg_tied`` maps each alias to the stored name and loading re-ties them.
- ``metrics.json``: evaluation results, ``{}`` until :func:`update_metrics` adds some.

Nothing is ever unpickled (safetensors and JSON only), so a checkpoint from someone else cannot
run code here. Saves are atomic: the new folder is written and fsynced beside the old one and only
then renamed into place, so a failed save leaves the old checkpoint as it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from rrg_core import __version__
from rrg_core.atomic_files import file_sha256, fsync_path, replace_folder, write_json_durably
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import DatasetError, RRGError

logger = logging.getLogger(__name__)

FORMAT = "rrg-checkpoint"
FORMAT_VERSION = 1
#: Model kinds a checkpoint may hold; :func:`register_kind` adds one (a typo in ``kind`` is refused).
KNOWN_KINDS: set[str] = {"dcrrg", "uar", "dvae", "feature_tokenizer"}
ENV_VAR = "RRG_CHECKPOINTS"

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
_TIED_KEY = "rrg_tied"


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

    ``config`` is a JSON-serialisable mapping or dataclass of hyper-parameters (tuples come back as
    lists). A folder that holds something other than a checkpoint is refused rather than replaced.
    """
    folder = Path(folder)
    if kind not in KNOWN_KINDS:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; known: {sorted(KNOWN_KINDS)}")
    files = {
        CONFIG_FILE: _config_document(kind, config, vocab, preset, data_fingerprint),
        METRICS_FILE: _jsonable_metrics(metrics or {}),
    }
    if vocab is not None:
        files[VOCAB_FILE] = vocab.to_dict()
    tensors, tied = _tensors_for_saving(state_dict)
    _refuse_foreign_folder(folder)
    # The staging and backup siblings' names start with "." so find_checkpoints skips them.
    replace_folder(folder, lambda staging: _write_complete(staging, files, tensors, tied))
    logger.info("saved %s checkpoint to %s (%d tensors)", kind, folder, len(state_dict))
    return folder


def _config_document(
    kind: str, config: Any, vocab: Vocabulary | None, preset: str | None, fingerprint: str | None
) -> dict[str, Any]:
    """The content of config.json; the hyper-parameters go through JSON now (tuples become lists)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    try:
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


def _tensors_for_saving(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict[str, str]]:
    """Contiguous CPU copies to store, and ``{alias: stored name}`` for tied weights.

    The very same view under two names (a tied embedding and output layer) is stored once. Copies
    never share memory, so tensors that merely overlap (a slice of another) are stored whole.
    """
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise CheckpointError("state_dict must be a non-empty mapping of names to tensors")
    tensors: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    views: dict[tuple, str] = {}
    for name, tensor in state_dict.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"state_dict entry {name!r} is not a tensor under a string name")
        # Compare on the original device: moving to the CPU would hide ties between GPU tensors.
        view = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
                tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)  # fmt: skip
        if tensor.numel() and view in views:  # empty tensors have no memory to share
            tied[name] = views[view]
            continue
        views[view] = name
        tensors[name] = tensor.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
    return tensors, tied


def _refuse_foreign_folder(folder: Path) -> None:
    """Refuse to replace anything but an earlier checkpoint or an empty folder (it would be deleted)."""
    if os.path.lexists(folder) and (folder.is_symlink() or not folder.is_dir()):
        raise CheckpointError(f"cannot save a checkpoint to {folder}: it exists and is not a folder")
    try:
        if folder.exists() and any(folder.iterdir()):
            _read_header(folder)
    except CheckpointError:
        raise CheckpointError(
            f"cannot save a checkpoint to {folder}: it holds files but is not a checkpoint"
        ) from None


def _write_complete(staging: Path, files: dict[str, Any], tensors: dict, tied: dict[str, str]) -> None:
    """Write the whole checkpoint into the empty folder ``staging`` (fsynced), ready to be renamed."""
    for name, data in files.items():
        write_json_durably(staging / name, data)
    metadata = {_TIED_KEY: json.dumps(tied, sort_keys=True)} if tied else None
    safetensors.torch.save_file(tensors, staging / WEIGHTS_FILE, metadata=metadata)
    fsync_path(staging / WEIGHTS_FILE)


def _jsonable_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics as strict JSON: numpy/torch scalars become numbers and NaN/inf become null.

    An undefined score (no positive label in a split) is NaN; refusing it would waste the evaluation.
    """

    def convert(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(key): convert(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [convert(item) for item in value]
        if getattr(value, "ndim", None) == 0:  # a numpy or torch scalar
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if value is None or isinstance(value, str | int | float | bool):
            return value
        raise CheckpointError(f"metric value {value!r} is not a number, string, list or mapping")

    return {str(key): convert(value) for key, value in metrics.items()}


def load_checkpoint(
    folder: str | os.PathLike, *, expected_kind: str | None = None, device: str | torch.device = "cpu"
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; anything doubtful raises CheckpointError."""
    folder = Path(folder).expanduser()  # "~/..." as a user types it in Python too
    header = _read_header(folder)
    kind = header["kind"]
    if expected_kind is not None and kind != expected_kind:
        raise CheckpointError(f"checkpoint {folder} is a {kind!r} checkpoint, expected {expected_kind!r}")
    # A checkpoint is not meant to be rewritten while it is being loaded, so the hash taken
    # here is the hash of the weights read next.
    sha256 = checkpoint_hash(folder)
    return Checkpoint(
        folder=folder,
        kind=kind,
        config=header["config"],
        state_dict=_read_weights(folder, device),
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
        raise CheckpointError(f"checkpoint folder {folder} not found")
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"{folder} is not a checkpoint: {CONFIG_FILE} is missing")
    header = _read_json(folder, CONFIG_FILE)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(
            f"{folder} is not a rrg-review checkpoint ({CONFIG_FILE} lacks format {FORMAT!r})"
        )
    version = header.get("format_version")
    if type(version) is not int or version < 1:
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


def _read_weights(folder: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    """Tensors from safetensors (never pickle) on ``device``, re-tied after the move so ties survive it."""
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise CheckpointError(f"unknown device {device!r}: {error}") from error
    if target.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"cannot load the checkpoint onto {device!r}: no CUDA device is available")
    try:
        with safetensors.safe_open(folder / WEIGHTS_FILE, framework="pt", device="cpu") as handle:
            tied = dict(json.loads((handle.metadata() or {}).get(_TIED_KEY, "{}")))
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        if not set(tied.values()) <= set(tensors):
            raise ValueError(f"tied weights name missing tensors: {tied}")
    except (safetensors.SafetensorError, OSError, RuntimeError, ValueError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {folder}: {WEIGHTS_FILE} is corrupt or not a safetensors file ({error})"
        ) from error
    tensors = {name: tensor.to(target) for name, tensor in tensors.items()}
    return tensors | {alias: tensors[stored] for alias, stored in tied.items()}


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


def _read_json(folder: Path, name: str) -> Any:
    """A JSON file of the checkpoint; unreadable or invalid JSON is refused."""
    try:
        return json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {folder}: {name} is not valid JSON ({error})") from error


def _read_metrics(folder: Path) -> dict[str, Any]:
    """metrics.json, or {} when absent (metrics are a report, not needed to run the model)."""
    if not (folder / METRICS_FILE).exists():
        return {}
    metrics = _read_json(folder, METRICS_FILE)
    if not isinstance(metrics, dict):
        raise CheckpointError(f"checkpoint {folder}: {METRICS_FILE} is not a JSON object")
    return metrics


def checkpoint_hash(folder: str | os.PathLike) -> str:
    """sha256 (hex) of the checkpoint's model.safetensors."""
    try:
        return file_sha256(Path(folder) / WEIGHTS_FILE)
    except OSError as error:
        raise CheckpointError(
            f"checkpoint {folder}: {WEIGHTS_FILE} is missing or unreadable ({error})"
        ) from error


def data_fingerprint(annotation_path: str | os.PathLike) -> str:
    """A short (16 hex digits) sha256 of an annotation file, or of ``annotation.json`` in a data folder."""
    path = Path(annotation_path)
    if path.is_dir():
        path = path / "annotation.json"
    try:
        return file_sha256(path)[:16]
    except OSError as error:
        raise DatasetError(f"cannot fingerprint annotation file {path}: {error}") from error


def default_checkpoint_root() -> Path | None:
    """The folder named by the ``RRG_CHECKPOINTS`` environment variable, or None when unset."""
    value = os.environ.get(ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def find_checkpoints(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """The newest checkpoint of each kind in ``root`` (default ``RRG_CHECKPOINTS``) or its sub-folders.

    Unreadable folders are skipped with a warning, so one broken checkpoint does not keep the app
    from starting with the others.
    """
    base = Path(root).expanduser() if root is not None else default_checkpoint_root()
    if base is None:
        raise CheckpointError(f"no checkpoint folder given: pass --checkpoints DIR or set {ENV_VAR}")
    if not base.is_dir():
        raise CheckpointError(f"checkpoint folder {base} not found")
    # Hidden sub-folders are unfinished or replaced saves (".name.tmp-*", ".name.old-*").
    visible = [child for child in sorted(base.iterdir()) if not child.name.startswith(".")]
    best: dict[str, tuple[str, str, Path]] = {}
    for folder in [base, *visible]:
        if not (folder / CONFIG_FILE).is_file():
            continue
        try:
            header = _read_header(folder)
        except CheckpointError as error:
            logger.warning("skipping %s: %s", folder, error)
            continue
        # "created" is ISO 8601 in UTC to the microsecond, so comparing the strings compares times.
        rank = (str(header.get("created", "")), folder.name, folder)
        best[header["kind"]] = max(best.get(header["kind"], rank), rank)
    return {kind: rank[2] for kind, rank in sorted(best.items())}


def update_metrics(folder: str | os.PathLike, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``metrics`` into the checkpoint's metrics.json atomically and return the result.

    Nested mappings merge key by key (``{"test": {"bleu4": ...}}`` then ``{"test": {"ce_f1": ...}}``
    keeps both); other values replace the old ones. The file is read, merged and replaced by an
    atomic rename, without a lock: evaluations of one checkpoint are run one at a time.
    """
    folder = Path(folder)
    _read_header(folder)
    merged = _deep_merge(_read_metrics(folder), _jsonable_metrics(metrics))
    temporary = folder / f".{METRICS_FILE}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        write_json_durably(temporary, merged)
        os.replace(temporary, folder / METRICS_FILE)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_path(folder)
    return merged


def _deep_merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` updated by ``new``, recursing into mappings present in both."""
    merged = dict(old)
    for key, value in new.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _deep_merge(merged[key], value) if both else value
    return merged
