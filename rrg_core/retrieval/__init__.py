"""Retrieval: the nearest studies of a study set (the training split) to a query embedding.

- :mod:`~rrg_core.retrieval.index`: :class:`RetrievalIndex` (unit embeddings + study ids, reports,
  image paths) and its :meth:`~RetrievalIndex.search`, by cosine similarity.
- :mod:`~rrg_core.retrieval.search`: the exact top-k (a chunked torch product) and the optional
  FAISS backend.
- :mod:`~rrg_core.retrieval.files`: saving beside a checkpoint and loading with its checks.
- :mod:`~rrg_core.retrieval.build`: the DCRRG / UAR embeddings of a study set, as indexes.
- :mod:`~rrg_core.retrieval.domain`: the out-of-domain score (Mahalanobis distance to the training
  studies' image embeddings) and its threshold, calibrated on the checkpoint's validation split.
"""

from rrg_core.retrieval.build import EMBEDDINGS, build_indexes, indexable
from rrg_core.retrieval.domain import (
    DomainCalibration,
    DomainModel,
    calibrate,
    load_calibration,
    save_calibration,
)
from rrg_core.retrieval.files import (
    SCHEMA_VERSION,
    index_data_root,
    index_folder,
    load_index,
    read_index,
    save_index,
    saved_indexes,
)
from rrg_core.retrieval.index import (
    DEFAULT_FAISS_MIN_ROWS,
    IndexMismatchError,
    IndexSource,
    Neighbour,
    RetrievalError,
    RetrievalIndex,
)

__all__ = [
    "DEFAULT_FAISS_MIN_ROWS",
    "EMBEDDINGS",
    "SCHEMA_VERSION",
    "DomainCalibration",
    "DomainModel",
    "IndexMismatchError",
    "IndexSource",
    "Neighbour",
    "RetrievalError",
    "RetrievalIndex",
    "build_indexes",
    "calibrate",
    "domain_scores",
    "index_data_root",
    "index_folder",
    "indexable",
    "load_calibration",
    "load_index",
    "read_index",
    "save_calibration",
    "save_index",
    "saved_indexes",
    "score_from_similarities",
]
