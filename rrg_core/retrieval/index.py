"""A retrieval index: one embedding per study of a study set, searched by cosine similarity.

The embeddings are one kind from one checkpoint: DCRRG's DCCLIP global image or report embeddings,
or UAR's CRA global image or report features (:mod:`rrg_core.retrieval.build`). They are stored
L2-normalised, so a query's cosine similarity with every study is one matrix product. An image
query against the image index finds studies that look alike; against the report index, the reports
the model places nearest to the image (the UAR paper's Figure 3 shows both).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from rrg_core.errors import RRGError
from rrg_core.retrieval.search import DEFAULT_CHUNK_ROWS, LazyFaiss, faiss_module, top_k
from rrg_core.review_result import Neighbour

logger = logging.getLogger(__name__)

Backend = Literal["auto", "exact", "faiss"]
BACKENDS: tuple[str, ...] = ("auto", "exact", "faiss")

#: ``backend="auto"`` uses FAISS (when installed and the index is on the CPU) from this many studies
#: up; below it the torch product is about as fast and needs no second copy of the embeddings ...
DEFAULT_FAISS_MIN_ROWS = 200_000
#: ... and only for searches of fewer queries than this at once: FAISS's flat scan beat the torch
#: product for one query on 1M rows (2x, one thread), but from 20 queries on it switches to its BLAS
#: path, 4x slower than torch's (benchmarks/bench_retrieval.py).
FAISS_MAX_QUERIES = 20
#: A row whose L2 norm is this close to 1 counts as unit length and is stored as it is.
UNIT_TOLERANCE = 1e-6


class RetrievalError(RRGError):
    """A retrieval index or query is unusable: wrong shape, non-finite values, bad files, no FAISS."""


class IndexMismatchError(RetrievalError):
    """A saved index belongs to another checkpoint, or was written in a schema this code does not read."""


@dataclass(frozen=True)
class IndexSource:
    """Where an index's embeddings come from.

    Attributes:
        model_kind: the checkpoint's kind, ``"dcrrg"`` or ``"uar"``.
        embedding_kind: ``"image"`` or ``"report"``.
        embedding: what the vectors are, in words (e.g. "DCCLIP global image embedding").
        checkpoint_sha256: the hash of the weights that computed them (:func:`checkpoint_hash`).
        data_fingerprint: :func:`~rrg_core.checkpoints.data_fingerprint` of the annotation, if known.
        split: the annotation split the studies come from, if known.
    """

    model_kind: str
    embedding_kind: str
    embedding: str
    checkpoint_sha256: str
    data_fingerprint: str | None = None
    split: str | None = None


class RetrievalIndex:
    """Studies' embeddings (N, D), L2-normalised float32, with their ids, reports and image paths.

    Args:
        embeddings: (N, D) finite, no zero row, N >= 1; any float dtype and device (kept there, as
            float32; a GPU index is searched on the GPU).
        study_ids, reports, image_paths: one per row.
        source: what the embeddings are (saved with the index, checked when it is loaded).
        backend: ``"exact"`` (torch matrix product), ``"faiss"`` (FAISS IndexFlatIP, also exact) or
            ``"auto"``: FAISS for searches of fewer than :data:`FAISS_MAX_QUERIES` queries on an
            index of ``faiss_min_rows`` studies or more, when it is installed and the index is on
            the CPU; else exact.
        faiss_min_rows: the size from which ``"auto"`` picks FAISS.
        chunk_rows: rows scored at a time by the exact search (bounds its memory).

    Raises:
        RetrievalError: any argument out of shape or range.
    """

    def __init__(
        self,
        embeddings: Tensor | np.ndarray,
        study_ids: Sequence[str],
        reports: Sequence[str],
        image_paths: Sequence[str],
        source: IndexSource,
        *,
        backend: Backend = "auto",
        faiss_min_rows: int = DEFAULT_FAISS_MIN_ROWS,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> None:
        matrix = torch.as_tensor(embeddings)
        if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
            raise RetrievalError(
                f"an index needs embeddings of shape (studies, dimensions) with at least one study, got "
                f"{tuple(matrix.shape)}"
            )
        if not matrix.is_floating_point():
            raise RetrievalError(f"embeddings must be floating point, got {matrix.dtype}")
        counts = {"study ids": len(study_ids), "reports": len(reports), "image paths": len(image_paths)}
        if any(count != matrix.shape[0] for count in counts.values()):
            shown = ", ".join(f"{count} {what}" for what, count in counts.items())
            raise RetrievalError(f"{matrix.shape[0]} embeddings but {shown}: need one of each per study")
        if backend not in BACKENDS:
            raise RetrievalError(f"unknown search backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if backend == "faiss" and faiss_module() is None:
            raise RetrievalError(
                "the FAISS backend needs the faiss-cpu package: pip install -r requirements-faiss.txt"
            )
        if faiss_min_rows < 0 or chunk_rows < 1:
            raise RetrievalError(
                f"faiss_min_rows must be >= 0 and chunk_rows >= 1, got {faiss_min_rows}, {chunk_rows}"
            )
        self.embeddings = _unit_rows(matrix, chunk_rows)
        self.study_ids = [str(value) for value in study_ids]
        self.reports = list(reports)
        self.image_paths = list(image_paths)
        self.source = source
        self.requested_backend: Backend = backend
        self.faiss_min_rows, self.chunk_rows = faiss_min_rows, chunk_rows
        self._faiss = LazyFaiss(self.embeddings)

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def __repr__(self) -> str:
        return (
            f"RetrievalIndex({len(self)} studies x {self.dim}, {self.source.model_kind} "
            f"{self.source.embedding_kind}, backend {self.backend_for(1)})"
        )

    @property
    def dim(self) -> int:
        """D, the length of every embedding (and of a query)."""
        return self.embeddings.shape[1]

    @property
    def device(self) -> torch.device:
        """Where the embeddings live and the exact search runs."""
        return self.embeddings.device

    def backend_for(self, queries: int = 1) -> str:
        """The backend a search of ``queries`` queries at once uses: ``"exact"`` or ``"faiss"``."""
        if self.requested_backend != "auto":
            return self.requested_backend
        large = len(self) >= self.faiss_min_rows and queries < FAISS_MAX_QUERIES
        return "faiss" if large and self.device.type == "cpu" and faiss_module() is not None else "exact"

    def to(self, device: str | torch.device) -> RetrievalIndex:
        """This index with its embeddings on ``device`` (a new object; this one is unchanged)."""
        return RetrievalIndex(
            self.embeddings.to(device), self.study_ids, self.reports, self.image_paths, self.source,
            backend=self.requested_backend, faiss_min_rows=self.faiss_min_rows, chunk_rows=self.chunk_rows,
        )  # fmt: skip

    def top_k(self, queries: Tensor | np.ndarray, k: int = 5) -> tuple[Tensor, Tensor]:
        """Cosine scores (Q, k') and row numbers (Q, k') of each query's k' = min(k, N) nearest studies.

        ``queries`` (Q, D) or (D,) need not be unit length; each is normalised first. Rows come best
        first; among equal scores the earlier study comes first.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise RetrievalError(f"k (how many neighbours) must be a whole number of at least 1, got {k!r}")
        matrix = self._check_queries(queries)
        k = min(k, len(self))
        if self.backend_for(len(matrix)) == "faiss":
            if self.device.type != "cpu":
                raise RetrievalError(
                    f"the FAISS backend searches CPU indexes only; this one is on {self.device}"
                )
            return self._faiss.get().top_k(matrix, k)
        return top_k(matrix, self.embeddings, k, chunk_rows=self.chunk_rows)

    def search(self, queries: Tensor | np.ndarray, k: int = 5) -> list[Neighbour] | list[list[Neighbour]]:
        """The k nearest studies, best first (all N when N < k), with their cosine scores.

        ``queries``: one embedding (D,), giving a list of neighbours, or Q of them (Q, D), giving one
        list per query (in one pass over the index). Queries need not be unit length.
        """
        matrix = torch.as_tensor(queries)
        scores, rows = self.top_k(matrix, k)
        found = [
            [self.neighbour(row, score) for row, score in zip(r, s, strict=True)]
            for r, s in zip(rows.tolist(), scores.tolist(), strict=True)
        ]
        return found[0] if matrix.ndim == 1 else found

    def neighbour(self, row: int, score: float) -> Neighbour:
        """The study of row ``row`` as a :class:`Neighbour` with the given score."""
        return Neighbour(self.study_ids[row], self.reports[row], self.image_paths[row], float(score))

    def metadata(self) -> dict[str, Any]:
        """Everything but the embeddings, as plain data (what :mod:`rrg_core.retrieval.files` saves)."""
        return {
            "source": dataclasses.asdict(self.source),
            "count": len(self),
            "dim": self.dim,
            "studies": [
                {"id": i, "report": r, "image_path": p}
                for i, r, p in zip(self.study_ids, self.reports, self.image_paths, strict=True)
            ],
        }

    def _check_queries(self, queries: Tensor | np.ndarray) -> Tensor:
        """(Q, D) or (D,) finite, non-zero queries -> unit rows (Q, D) float32 on the index's device."""
        matrix = torch.as_tensor(queries)
        if matrix.ndim == 1:
            matrix = matrix.unsqueeze(0)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise RetrievalError(
                f"query embeddings must have {self.dim} values (this index's dimension: "
                f"{self.source.model_kind} {self.source.embedding_kind}), got shape {tuple(matrix.shape)}; "
                "was the query made by another model?"
            )
        matrix = matrix.to(self.device, torch.float32)
        if not torch.isfinite(matrix).all():
            raise RetrievalError("a query embedding has NaN or infinite values")
        norms = matrix.norm(dim=1, keepdim=True)
        if not (norms > 0).all():
            raise RetrievalError("a query embedding is all zeros: it has no direction to compare")
        return matrix / norms


def _unit_rows(matrix: Tensor, chunk_rows: int) -> Tensor:
    """A float32 copy of ``matrix`` with every row of unit length (to :data:`UNIT_TOLERANCE`), written
    chunk by chunk so the temporaries stay small; refuses non-finite values and zero rows."""
    out = torch.empty(matrix.shape, dtype=torch.float32, device=matrix.device)
    for start in range(0, matrix.shape[0], chunk_rows):
        chunk = matrix[start : start + chunk_rows].to(torch.float32)
        norms = chunk.norm(dim=1, keepdim=True)  # NaN or inf where a row has one: no separate check
        if not torch.isfinite(norms).all():
            raise RetrievalError("embeddings have NaN or infinite values: the model that made them is broken")
        if not (norms > 0).all():
            row = start + int((norms.flatten() == 0).nonzero()[0])
            raise RetrievalError(f"embedding row {row} is all zeros: it has no direction to compare")
        # Rows already of unit length are kept bit for bit (x * 1.0 == x): a saved index loads back unchanged.
        scale = torch.where((norms - 1).abs() <= UNIT_TOLERANCE, 1.0, 1.0 / norms)
        torch.mul(chunk, scale, out=out[start : start + chunk_rows])
    return out
