"""Review latency and throughput of ReviewPipeline on this machine, with real checkpoints.

- One study per call (``review``): both models, beam search, UAR heatmaps, the Table-7 rows and the
  retrieval neighbours, as the app asks for them. p50 / p95 over ``--studies`` test studies after
  ``--warmup`` calls; the parts' medians from each result's timings.
- ``review_batch`` throughput in studies/s at the given batch sizes.
- Captum attributions (on demand in the app, so timed apart): per method, median over a few views.
- Peak memory: the process's maximum resident set (and CUDA's peak allocation on a GPU).

Run from the repository root, e.g.:
  .venv/bin/python benchmarks/bench_pipeline.py --checkpoints runs/cpu --data runs/iu_phantom
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from rrg_core.data.datasets import read_annotation  # noqa: E402
from rrg_core.pipeline import ReviewPipeline  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` by linear interpolation."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def study_views(data: Path, split: str, count: int) -> list[list[str]]:
    """The image paths of the first ``count`` studies of ``split``."""
    records = read_annotation(data)[split][:count]
    if not records:
        raise SystemExit(f"no {split} studies in {data}")
    return [[str(data / "images" / path) for path in record.image_paths] for record in records]


def time_single(pipeline: ReviewPipeline, studies: list[list[str]], warmup: int) -> dict:
    for views in studies[:warmup]:
        pipeline.review(views)
    seconds, parts = [], {}
    for views in studies:
        started = time.perf_counter()
        result = pipeline.review(views)
        seconds.append(time.perf_counter() - started)
        for name, value in result.timings.items():
            parts.setdefault(name, []).append(value)
    return {
        "p50": percentile(seconds, 0.5),
        "p95": percentile(seconds, 0.95),
        "parts": {name: statistics.median(values) for name, values in parts.items()},
    }


def time_batch(pipeline: ReviewPipeline, studies: list[list[str]], size: int) -> float:
    """Studies per second of review_batch over all ``studies`` in batches of ``size``."""
    started = time.perf_counter()
    for start in range(0, len(studies), size):
        pipeline.review_batch(studies[start : start + size])
    return len(studies) / (time.perf_counter() - started)


def time_attributions(pipeline: ReviewPipeline, studies: list[list[str]], views: int) -> dict[str, float]:
    out = {}
    for method in ("gradcam", "ig", "occlusion"):
        pipeline.attribute(studies[0][0], "Pleural Effusion", method)  # warm-up
        out[method] = statistics.median(
            pipeline.attribute(study[0], "Pleural Effusion", method).seconds for study in studies[:views]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoints", type=Path, help="folder with both checkpoints (default RRG_CHECKPOINTS)"
    )
    parser.add_argument("--data", type=Path, required=True, help="data set whose studies are reviewed")
    parser.add_argument("--split", default="test")
    parser.add_argument("--studies", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[8, 16])
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--neighbours", type=int, default=5)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    pipeline = ReviewPipeline.from_checkpoints(
        args.checkpoints, device=args.device, beam_size=args.beam_size, neighbours=args.neighbours
    )
    load_seconds = time.perf_counter() - started
    studies = study_views(args.data, args.split, args.studies)
    device = next(iter(pipeline.models.values())).generator.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    single = time_single(pipeline, studies, args.warmup)
    batches = {size: time_batch(pipeline, studies, size) for size in args.batch_sizes}
    attributions = time_attributions(pipeline, studies, views=5) if "dcrrg" in pipeline.models else {}
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}")  # fmt: skip
    print(f"models: {', '.join(f'{k} ({m.generator.name})' for k, m in pipeline.models.items())}; "
          f"missing: {sorted(pipeline.missing) or 'none'}; beam {args.beam_size}, "
          f"{args.neighbours} neighbours; "
          f"load {load_seconds:.1f} s")  # fmt: skip
    print(f"studies: {len(studies)} of {args.data} ({args.split}), {args.warmup} warm-up calls\n")
    print("| measure | value |")
    print("|---|---:|")
    print(f"| review, one study: p50 | {single['p50'] * 1000:.0f} ms |")
    print(f"| review, one study: p95 | {single['p95'] * 1000:.0f} ms |")
    for name, value in single["parts"].items():
        print(f"| part {name} (median) | {value * 1000:.0f} ms |")
    for size, rate in batches.items():
        print(f"| review_batch of {size}: throughput | {rate:.2f} studies/s |")
    for method, seconds in attributions.items():
        print(f"| attribution {method} (median, one view) | {seconds * 1000:.0f} ms |")
    print(f"| peak resident memory | {peak_rss_mb:.0f} MB |")
    if device.type == "cuda":
        print(f"| peak CUDA memory | {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MB |")


if __name__ == "__main__":
    main()
