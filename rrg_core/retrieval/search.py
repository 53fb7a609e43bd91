"""Top-k search by inner product over a matrix of unit rows: exact (torch, chunked) or FAISS.

Both return, per query, the k best rows in the order (score descending, row ascending): among equal
scores the earlier row wins, so results do not depend on thread timing or on how rows are chunked.
FAISS (the optional ``faiss-cpu`` package, ``requirements-faiss.txt``) keeps that order among the k
it returns, but where more rows tie at the k-th score than fit, which of them it returns is its own.
"""

from __future__ import annotations

import importlib
import logging
import threading
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

#: Bank rows scored at a time: memory for scores stays at QUERY_BLOCK x CHUNK_ROWS floats (64 MB).
DEFAULT_CHUNK_ROWS = 65_536
QUERY_BLOCK = 256


def top_k(
    queries: Tensor, bank: Tensor, k: int, *, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> tuple[Tensor, Tensor]:
    """Exact top-k rows of ``bank`` (N, D) by inner product with each of ``queries`` (Q, D).

    Args:
        queries: (Q, D), same dtype and device as ``bank``.
        bank: (N, D), N >= 1. For unit rows (and unit queries) the scores are cosine similarities.
        k: 1 <= k <= N.
        chunk_rows: bank rows scored at once; queries go QUERY_BLOCK at a time, so memory stays
            bounded whatever N and Q are.

    Returns:
        (scores (Q, k), rows (Q, k) int64), each query's best rows first, ties to the lower row.
    """
    if not 1 <= k <= bank.shape[0]:
        raise ValueError(f"k must be between 1 and {bank.shape[0]}, got {k}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    blocks = [
        _top_k_block(queries[q : q + QUERY_BLOCK], bank, k, chunk_rows)
        for q in range(0, len(queries), QUERY_BLOCK)
    ]
    if not blocks:
        return queries.new_empty((0, k)), torch.empty((0, k), dtype=torch.long, device=queries.device)
    return torch.cat([b[0] for b in blocks]), torch.cat([b[1] for b in blocks])


def _top_k_block(queries: Tensor, bank: Tensor, k: int, chunk_rows: int) -> tuple[Tensor, Tensor]:
    """:func:`top_k` for one block of queries: chunk by chunk, keeping the best k seen so far."""
    best: tuple[Tensor, Tensor] | None = None
    for start in range(0, bank.shape[0], chunk_rows):
        scores = queries @ bank[start : start + chunk_rows].T
        values, rows = _ordered_top_k(scores, min(k, scores.shape[1]))
        rows += start
        if best is not None:
            # Every kept row precedes every row of this chunk, and each part is already in (score
            # descending, row ascending) order, so a stable sort by score keeps ties in row order.
            values, rows = torch.cat([best[0], values], dim=1), torch.cat([best[1], rows], dim=1)
            values, order = values.sort(dim=1, descending=True, stable=True)
            values, rows = values[:, :k], rows.gather(1, order)[:, :k]
        best = (values, rows)
    assert best is not None  # the bank has at least one row
    return best


def _ordered_top_k(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k best columns per row of ``scores`` in (score descending, column ascending) order.

    ``torch.topk`` may take any of several columns tied at the k-th score. That matters only where
    the (k+1)-th best score equals the k-th (rare: exact ties of float scores); those rows are redone
    by hand, taking the lowest tied columns. Asking topk for k+1 finds them without another pass over
    all the scores.
    """
    extra = min(k + 1, scores.shape[1])
    values, columns = scores.topk(extra, dim=1)
    boundary = values[:, k - 1 : k]
    left_out = (
        values[:, -1] == boundary[:, 0] if extra > k else torch.zeros_like(boundary[:, 0], dtype=torch.bool)
    )
    values, columns = values[:, :k].clone(), columns[:, :k].clone()
    for row in left_out.nonzero().flatten().tolist():
        above = (scores[row] > boundary[row]).nonzero().flatten()
        tied = (scores[row] == boundary[row]).nonzero().flatten()[: k - len(above)]
        columns[row] = torch.cat([above, tied])
        values[row] = scores[row, columns[row]]
    return order_ties(values, columns)


def order_ties(values: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Each query's results (Q, k) reordered to (score descending, row ascending)."""
    rows, order = rows.sort(dim=1)
    values, order2 = values.gather(1, order).sort(dim=1, descending=True, stable=True)
    return values, rows.gather(1, order2)


def faiss_module() -> ModuleType | None:
    """The ``faiss`` module, or None when the optional package is not installed."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        return None


class FaissFlatSearch:
    """Exact inner-product search with a FAISS ``IndexFlatIP`` over a CPU float32 bank.

    The FAISS index holds its own copy of the bank (N x D x 4 bytes more memory). Searching is
    thread-safe (FAISS reads the index only).
    """

    def __init__(self, bank: Tensor) -> None:
        faiss = faiss_module()
        if faiss is None:
            raise ImportError("faiss is not installed: pip install -r requirements-faiss.txt")
        matrix = np.ascontiguousarray(bank.detach().cpu().numpy(), dtype=np.float32)
        self.index = faiss.IndexFlatIP(matrix.shape[1])
        self.index.add(matrix)

    def top_k(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """As :func:`top_k`, with FAISS's choice among rows tied at the k-th score (module docstring)."""
        matrix = np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32)
        scores, rows = self.index.search(matrix, k)
        return order_ties(torch.from_numpy(scores), torch.from_numpy(rows).long())


class LazyFaiss:
    """A :class:`FaissFlatSearch` built on first use (building copies the bank), once, under a lock."""

    def __init__(self, bank: Tensor) -> None:
        self._bank = bank
        self._search: FaissFlatSearch | None = None
        self._lock = threading.Lock()

    def get(self) -> FaissFlatSearch:
        """The FAISS index, built now if this is the first call."""
        with self._lock:
            if self._search is None:
                logger.info("building a FAISS IndexFlatIP over %d rows", self._bank.shape[0])
                self._search = FaissFlatSearch(self._bank)
            return self._search
