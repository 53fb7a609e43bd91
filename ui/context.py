"""What every page of the app shares: the models, the review database, checkpoint facts, examples.

One :class:`AppContext` per server process. The models run one request at a time behind the
pipeline's own lock (drafts and attributions alike), so the page needs none of its own.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rrg_core.checkpoints import CONFIG_FILE, METRICS_FILE
from rrg_core.data.images import load_image
from rrg_core.pipeline import ReviewPipeline
from rrg_core.retrieval import index_data_root
from rrg_core.store import Store, StoreError, StoreUnavailableError, open_store

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"
#: A note the demo bootstrap leaves beside its checkpoints: what they were trained on.
TRAINED_ON_FILE = "TRAINED_ON.txt"


@dataclass
class CheckpointInfo:
    """A loaded checkpoint's facts for the model card and the neighbours' images."""

    key: str
    folder: Path
    header: dict[str, Any]
    metrics: dict[str, Any]
    data_root: Path | None


def read_checkpoint_info(key: str, folder: Path, data_root: Path | None = None) -> CheckpointInfo:
    """config.json and metrics.json of a checkpoint folder (unreadable files give empty dicts)."""

    def read(name: str) -> dict[str, Any]:
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    return CheckpointInfo(
        key, folder, read(CONFIG_FILE), read(METRICS_FILE), data_root or index_data_root(folder)
    )


class StoreHandle:
    """The review database, opened on first use and reopened after a failure.

    An unreachable server or unwritable file at start-up must not stop the app: the drafts can be
    read without it, and the next save tries again (:class:`StoreUnavailableError` until it works).
    """

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._store: Store | None = None
        self._lock = threading.Lock()

    def get(self) -> Store:
        """The open store; raises :class:`StoreUnavailableError` with the reason when it cannot open."""
        with self._lock:
            if self._store is None:
                try:
                    self._store = open_store(self.url)
                except StoreUnavailableError:
                    raise
                except StoreError as error:
                    raise StoreUnavailableError(f"the review database cannot be opened: {error}") from None
                except OSError as error:
                    raise StoreUnavailableError(f"the review database cannot be opened: {error}") from None
            return self._store

    def reset(self) -> None:
        """Forget the open store (after it failed), so that the next use reopens it."""
        with self._lock:
            if self._store is not None:
                self._store.close()
            self._store = None

    @property
    def description(self) -> str:
        """Where the database is, password hidden."""
        if self._store is not None:
            return self._store.url
        return self.url or "the default SQLite file in the user's data folder"


@dataclass
class AppContext:
    """Shared by every session (module docstring)."""

    pipeline: ReviewPipeline
    store: StoreHandle
    checkpoints: dict[str, CheckpointInfo] = field(default_factory=dict)
    trained_on: str | None = None
    examples_dir: Path = EXAMPLES_DIR
    _thumbs: OrderedDict = field(default_factory=OrderedDict)

    def examples(self) -> list[list[str]]:
        """The example studies: one list of image paths per study (files named ``NAME_view.png``)."""
        if not self.examples_dir.is_dir():
            return []
        studies: dict[str, list[str]] = {}
        for path in sorted(self.examples_dir.glob("*.png")):
            studies.setdefault(path.stem.split("_")[0], []).append(str(path))
        return list(studies.values())

    def neighbour_image(self, key: str, image_path: str | None) -> np.ndarray | None:
        """A retrieved study's image as a small grey array, or None when its data folder is unknown."""
        info = self.checkpoints.get(key)
        if image_path is None or info is None or info.data_root is None:
            return None
        path = (info.data_root / image_path).resolve()
        if info.data_root.resolve() not in path.parents:
            return None  # an index must not make the app read files outside its data set
        cache_key = str(path)
        if cache_key in self._thumbs:
            self._thumbs.move_to_end(cache_key)
            return self._thumbs[cache_key]
        try:
            # Through the app's loader: 16-bit PNGs and DICOMs are windowed, not clipped to white.
            picture = Image.fromarray(load_image(path).display())
            picture.thumbnail((160, 160))
            array = np.asarray(picture)
        except (OSError, ValueError):
            logger.debug("neighbour image %s not readable", path)
            array = None
        self._thumbs[cache_key] = array
        while len(self._thumbs) > 512:
            self._thumbs.popitem(last=False)
        return array
