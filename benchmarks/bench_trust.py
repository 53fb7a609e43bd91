"""Review latency before and after the trust signals, and the cost of each, in one run.

One pipeline is loaded once; each study is reviewed under four settings in turn (interleaved, so a
busy machine slows them alike): ``before`` (no out-of-domain check, no sentence support: the review
as it was), ``+domain``, ``+support`` and ``after`` (both, the default). Prints p50 / p95 per setting
and the pairs before -> after, plus the medians of the result's own timing parts.

Run from the repository root, e.g.:
  .venv/bin/python benchmarks/bench_trust.py --checkpoints ~/.cache/rrg-review/demo/checkpoints \
      --data ~/.cache/rrg-review/demo/phantoms
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from bench_pipeline import percentile, study_views  # noqa: E402

from rrg_core.pipeline import ReviewPipeline  # noqa: E402
from rrg_core.support import SupportSettings  # noqa: E402

SETTINGS = ("before", "+domain", "+support", "after")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--studies", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=SupportSettings().samples)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    support = SupportSettings(samples=args.samples)
    pipeline = ReviewPipeline.from_checkpoints(args.checkpoints, device="cpu", support=support)
    domains = {key: model.domain for key, model in pipeline.models.items()}

    def configure(setting: str) -> None:
        pipeline.support = support if setting in ("+support", "after") else SupportSettings(samples=0)
        for key, model in pipeline.models.items():
            model.domain = domains[key] if setting in ("+domain", "after") else None

    studies = study_views(args.data, args.split, args.studies + args.warmup)
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    parts: dict[str, list[float]] = {}
    for number, views in enumerate(studies):
        for setting in SETTINGS:
            configure(setting)
            started = time.perf_counter()
            result = pipeline.review(views)
            elapsed = time.perf_counter() - started
            if number < args.warmup:
                continue
            seconds[setting].append(elapsed)
            if setting == "after":
                for name, value in result.timings.items():
                    parts.setdefault(name, []).append(value)
    print(
        f"{args.studies} {args.split} studies of {args.data}, both models ({', '.join(pipeline.models)}), "
        f"{args.threads} torch threads, support {support.describe()}"
    )
    for setting in SETTINGS:
        values = seconds[setting]
        print(f"  {setting:9s} p50 {percentile(values, 0.5):.3f} s  p95 {percentile(values, 0.95):.3f} s")
    before, after = (percentile(seconds[s], 0.5) for s in ("before", "after"))
    print(f"review p50 before -> after: {before:.3f} s -> {after:.3f} s (+{after - before:.3f} s)")
    for setting in ("+domain", "+support"):
        print(f"  cost of {setting[1:]}: +{percentile(seconds[setting], 0.5) - before:.3f} s at p50")
    print(
        "parts of 'after' (median s): "
        + ", ".join(f"{k} {statistics.median(v):.4f}" for k, v in parts.items())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
