"""Retrieval speed: query latency, build time and memory of a RetrievalIndex, exact (torch) and FAISS.

For each size N: N random 256-d float32 embeddings (seeded normal draws) become a RetrievalIndex
(build = the unit-row copy every index makes; for FAISS also adding them to an IndexFlatIP, which
holds a second copy); then ``--queries`` random queries are searched one at a time with ``search(query,
k)`` (the pipeline's call: one study, its neighbours as Neighbour objects), after 5 warm-up queries,
giving p50 and p95 latency, and once more as one (Q, D) batch. FAISS's results are checked against
the exact ones. Memory: the peak resident size above the process's size before each build (Linux
/proc; the embeddings alone are N x 256 x 4 bytes).

Run from the repository root:  .venv/bin/python benchmarks/bench_retrieval.py [--sizes 100000 1000000]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from rrg_core.retrieval import IndexSource, RetrievalIndex  # noqa: E402
from rrg_core.retrieval.search import faiss_module  # noqa: E402

WARM_UP = 5
SOURCE = IndexSource("dcrrg", "image", "random normal vectors", "0" * 64)


def random_rows(n: int, dim: int, seed: int) -> torch.Tensor:
    """(n, dim) float32 normal draws, made in blocks (torch.randn of 1M x 256 at once doubles the peak)."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(n, dim)
    for start in range(0, n, 65_536):
        block = out[start : start + 65_536]
        block.copy_(torch.randn(block.shape, generator=generator))
    return out


def _status_kib(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` figure of this process in KiB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak() -> int | None:
    """Reset the peak-RSS mark to the current RSS (Linux ``clear_refs`` 5) and return that RSS in KiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_kib("VmRSS")


def peak_above(base: int | None) -> str:
    """The peak RSS since :func:`reset_peak` above ``base``, in MB ("?" where /proc is not there)."""
    peak = _status_kib("VmHWM")
    return "?" if base is None or peak is None else f"{(peak - base) / 1024:.0f}"


def latencies_ms(index: RetrievalIndex, queries: torch.Tensor, k: int) -> list[float]:
    """Milliseconds of each single-query ``search`` call, after the warm-up."""
    for query in queries[:WARM_UP]:
        index.search(query, k)
    times = []
    for query in queries:
        started = time.perf_counter()
        index.search(query, k)
        times.append((time.perf_counter() - started) * 1000)
    return times


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method) of ``values``."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def measure(backend: str, bank: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[dict, torch.Tensor]:
    """One row of the table for ``backend`` and the batch search's result rows (for the comparison)."""
    gc.collect()
    base = reset_peak()
    started = time.perf_counter()
    blank = [""] * len(bank)
    index = RetrievalIndex(bank, blank, blank, blank, SOURCE, backend=backend)
    if backend == "faiss":
        index._faiss.get()  # build the FAISS index now, not inside the first query
    build = time.perf_counter() - started
    memory = peak_above(base)
    times = latencies_ms(index, queries, k)
    started = time.perf_counter()
    _, rows = index.top_k(queries, k)
    batch = (time.perf_counter() - started) * 1000 / len(queries)
    row = {"build": build, "memory": memory, "p50": percentile(times, 50), "p95": percentile(times, 95),
           "batch": batch}  # fmt: skip
    del index
    return row, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100_000, 1_000_000], help="default: 1e5 1e6")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch and FAISS threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    faiss = faiss_module()
    backends = ["exact"]
    if faiss is not None:
        faiss.omp_set_num_threads(args.threads)
        backends.append("faiss")
    version = f"faiss {faiss.__version__}" if faiss is not None else "faiss not installed"
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s) "
          f"for torch and FAISS, torch {torch.__version__}, {version}")  # fmt: skip
    print(f"{args.queries} single queries (k={args.k}) after {WARM_UP} warm-up ones; batch: all of them in "
          "one (Q, D) call, per query")  # fmt: skip
    print("\n| N x D | backend | build s | build peak MB | p50 ms | p95 ms | batch ms/query |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        bank = random_rows(size, args.dim, seed=size)
        queries = random_rows(args.queries, args.dim, seed=size + 1)
        results = {}
        for backend in backends:
            row, results[backend] = measure(backend, bank, queries, args.k)
            print(f"| {size:,} x {args.dim} | {backend} | {row['build']:.2f} | {row['memory']} | "
                  f"{row['p50']:.1f} | {row['p95']:.1f} | {row['batch']:.2f} |", flush=True)  # fmt: skip
        if "faiss" in results and not torch.equal(results["faiss"], results["exact"]):
            differing = (results["faiss"] != results["exact"]).any(dim=1).sum().item()
            print(f"  note: FAISS and exact rows differ for {differing} of {args.queries} queries (rounding)")
        del bank
    print(f"\nThe embeddings alone: {args.dim * 4 / 1e3:.2f} GB per million rows; FAISS adds a copy.")


if __name__ == "__main__":
    main()
