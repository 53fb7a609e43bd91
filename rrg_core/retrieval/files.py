"""Retrieval indexes on disk, beside the checkpoint whose model computed them.

``CHECKPOINT/index/<embedding kind>/`` holds:

- ``embeddings.safetensors``: one float32 tensor ``embeddings`` (N, D), unit rows;
- ``index.json``: ``{"format": "rrg-retrieval-index", "schema_version", "code_version", "created",
  "embeddings_sha256", "source": {model_kind, embedding_kind, embedding, checkpoint_sha256,
  data_fingerprint, split}, "count", "dim", "studies": [{"id", "report", "image_path"}, ...]}``,
  and optionally ``"data_root"``: the absolute data set folder the ``image_path``s are relative to,
  recorded at build time so that the app can show the neighbours' images (:func:`index_data_root`).

Nothing is unpickled. Loading refuses an index of another schema version, one whose
``checkpoint_sha256`` is not the hash of the checkpoint it is loaded for (retraining leaves the old
index behind, and its vectors would no longer match the new model's queries), and one whose
embeddings file is not the one written with it. Saves replace the folder atomically.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch

from rrg_core import __version__
from rrg_core.atomic_files import file_sha256, fsync_path, replace_folder, write_json_durably
from rrg_core.checkpoints import Checkpoint, CheckpointError, checkpoint_hash
from rrg_core.retrieval.index import IndexMismatchError, IndexSource, RetrievalError, RetrievalIndex

FORMAT = "rrg-retrieval-index"
SCHEMA_VERSION = 1
INDEX_DIR = "index"
EMBEDDINGS_FILE = "embeddings.safetensors"
METADATA_FILE = "index.json"
_TENSOR = "embeddings"
BUILD_COMMAND = "`python -m train index --checkpoint RUN_DIR --data DIR`"
_SOURCE_FIELDS = (
    "model_kind",
    "embedding_kind",
    "embedding",
    "checkpoint_sha256",
    "data_fingerprint",
    "split",
)


def index_folder(checkpoint_folder: str | os.PathLike, embedding_kind: str) -> Path:
    """Where the ``embedding_kind`` index of a checkpoint lives: ``CHECKPOINT/index/<kind>``."""
    if not embedding_kind.isidentifier():
        raise RetrievalError(f"an embedding kind is a plain name such as 'image', got {embedding_kind!r}")
    return Path(checkpoint_folder) / INDEX_DIR / embedding_kind


def saved_indexes(checkpoint_folder: str | os.PathLike) -> list[str]:
    """The embedding kinds that have a saved index beside this checkpoint (not checked), sorted."""
    root = Path(checkpoint_folder) / INDEX_DIR
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if (p / METADATA_FILE).is_file() and not p.name.startswith(".")
    )


def save_index(
    index: RetrievalIndex, folder: str | os.PathLike, *, data_root: str | os.PathLike | None = None
) -> Path:
    """Write ``index`` to ``folder`` (replacing an earlier index there, atomically); returns the folder.

    ``data_root``: the data set folder the studies' image paths are relative to (recorded as an
    absolute path, for showing the neighbours' images). A folder that holds files but no index is
    refused rather than replaced.
    """
    folder = Path(folder)
    if folder.exists() and (
        not folder.is_dir() or (any(folder.iterdir()) and not (folder / METADATA_FILE).is_file())
    ):
        raise RetrievalError(f"cannot save an index to {folder}: it exists and holds something else")
    embeddings = index.embeddings.detach().cpu().contiguous()

    def fill(staging: Path) -> None:
        safetensors.torch.save_file({_TENSOR: embeddings}, staging / EMBEDDINGS_FILE)
        fsync_path(staging / EMBEDDINGS_FILE)
        document = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "code_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "embeddings_sha256": file_sha256(staging / EMBEDDINGS_FILE),
            **index.metadata(),
        }
        if data_root is not None:
            document["data_root"] = str(Path(data_root).expanduser().resolve())
        write_json_durably(staging / METADATA_FILE, document)

    return replace_folder(folder, fill)


def index_data_root(checkpoint_folder: str | os.PathLike, embedding_kind: str = "image") -> Path | None:
    """The data set folder recorded when the checkpoint's ``embedding_kind`` index was built, if any.

    Read from ``index.json`` without loading or checking the embeddings: a missing, unreadable or
    older index (built before the folder was recorded) gives None.
    """
    path = index_folder(checkpoint_folder, embedding_kind) / METADATA_FILE
    try:
        root = json.loads(path.read_text(encoding="utf-8")).get("data_root")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return Path(root) if isinstance(root, str) and root else None


def load_index(
    checkpoint: Checkpoint | str | os.PathLike,
    embedding_kind: str,
    *,
    missing_ok: bool = False,
    **options: Any,
) -> RetrievalIndex | None:
    """The saved ``embedding_kind`` index of a checkpoint, checked against it (:func:`read_index`).

    ``checkpoint`` is a loaded :class:`Checkpoint` (its hash is reused) or its folder (the weights
    are hashed now). ``missing_ok``: None rather than an error when no such index was saved (a
    stale or broken one is still refused). ``options`` go to :class:`RetrievalIndex` (backend,
    faiss_min_rows, ...).
    """
    folder = checkpoint.folder if isinstance(checkpoint, Checkpoint) else Path(checkpoint)
    if missing_ok and not index_folder(folder, embedding_kind).exists():
        return None
    if isinstance(checkpoint, Checkpoint):
        expected = checkpoint.sha256
    else:
        try:
            expected = checkpoint_hash(folder)
        except CheckpointError as error:
            raise RetrievalError(f"cannot check the index against its checkpoint: {error}") from None
    return read_index(index_folder(folder, embedding_kind), checkpoint_sha256=expected, **options)


def read_index(
    folder: str | os.PathLike, *, checkpoint_sha256: str, verify: bool = True, **options: Any
) -> RetrievalIndex:
    """Read the index saved in ``folder`` for the checkpoint whose weights hash to ``checkpoint_sha256``.

    Args:
        folder: an index folder written by :func:`save_index`.
        checkpoint_sha256: the hash of the checkpoint the index must belong to.
        verify: compare the embeddings file with the sha256 recorded at saving (reads it twice;
            about 1 s per GB).
        options: passed to :class:`RetrievalIndex`.

    Raises:
        IndexMismatchError: another schema version, or built for other weights.
        RetrievalError: the folder or a file is missing, unreadable, corrupt or inconsistent.
    """
    folder = Path(folder)
    document = _read_document(folder)
    source = document["source"]
    if source["checkpoint_sha256"] != checkpoint_sha256:
        raise IndexMismatchError(
            f"the index in {folder} was built from other weights (checkpoint "
            f"{source['checkpoint_sha256'][:12]}) than the checkpoint it is loaded for "
            f"({checkpoint_sha256[:12]}): rebuild it with {BUILD_COMMAND}"
        )
    path = folder / EMBEDDINGS_FILE
    if not path.is_file():
        raise RetrievalError(f"the index in {folder} has no {EMBEDDINGS_FILE}: rebuild it")
    if verify and file_sha256(path) != document["embeddings_sha256"]:
        raise RetrievalError(
            f"{path} is not the file saved with {METADATA_FILE} (changed or corrupt): rebuild it"
        )
    try:
        with safetensors.safe_open(path, framework="pt", device="cpu") as handle:
            embeddings = handle.get_tensor(_TENSOR)
    except (safetensors.SafetensorError, OSError, RuntimeError, ValueError, TypeError) as error:
        raise RetrievalError(f"{path} is corrupt or not a safetensors index file ({error})") from None
    if tuple(embeddings.shape) != (document["count"], document["dim"]):
        raise RetrievalError(
            f"{path} holds {tuple(embeddings.shape)} embeddings but {METADATA_FILE} says "
            f"({document['count']}, {document['dim']})"
        )
    studies = document["studies"]
    return RetrievalIndex(
        embeddings,
        [s["id"] for s in studies],
        [s["report"] for s in studies],
        [s["image_path"] for s in studies],
        IndexSource(**{name: source.get(name) for name in _SOURCE_FIELDS}),
        **options,
    )


def _read_document(folder: Path) -> dict[str, Any]:
    """index.json, checked field by field, so that a broken file is named rather than crashed on."""
    path = folder / METADATA_FILE
    if not folder.is_dir():
        raise RetrievalError(f"no retrieval index at {folder}: build it with {BUILD_COMMAND}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RetrievalError(f"{folder} is not a retrieval index: {METADATA_FILE} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RetrievalError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise RetrievalError(f"{path} is not a rrg-review retrieval index (no format {FORMAT!r})")
    version = document.get("schema_version")
    if type(version) is not int:
        raise RetrievalError(f"{path}: malformed schema_version {version!r}")
    if version != SCHEMA_VERSION:
        newer = (
            "a newer rrg-review: upgrade, or rebuild it"
            if version > SCHEMA_VERSION
            else "an older rrg-review"
        )
        raise IndexMismatchError(
            f"{path} has schema version {version}, written by {newer}; this version reads {SCHEMA_VERSION} "
            f"(rebuild with {BUILD_COMMAND})"
        )
    source, studies = document.get("source"), document.get("studies")
    fields_ok = (
        isinstance(source, dict)
        and all(isinstance(source.get(name), str) for name in _SOURCE_FIELDS[:4])
        and isinstance(document.get("embeddings_sha256"), str)
        and all(type(document.get(name)) is int for name in ("count", "dim"))
        and isinstance(studies, list)
        and len(studies) == document["count"]
        and all(
            isinstance(s, dict) and all(isinstance(s.get(key), str) for key in ("id", "report", "image_path"))
            for s in studies
        )
    )
    if not fields_ok:
        raise RetrievalError(
            f"{path} is malformed (source, count, dim or studies missing or of the wrong type)"
        )
    return document
