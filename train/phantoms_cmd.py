"""``python -m train phantoms``: write a synthetic chest X-ray data set (templated, or from real reports)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rrg_core.phantoms.writer import write_from_reports, write_phantoms


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command."""
    parser = subparsers.add_parser(
        "phantoms",
        help="write synthetic radiographs (R2Gen layout, with finding masks)",
        description="Templated phantoms (--n), or IU-Phantom: phantoms drawn from real reports "
        "(--from-reports).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output data set folder")
    parser.add_argument("--n", type=int, default=100, help="number of templated studies (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument(
        "--from-reports",
        type=Path,
        metavar="ANNOTATION",
        help="render phantoms for the studies of this annotation.json (real reports)",
    )
    parser.add_argument("--limit", type=int, help="with --from-reports: first K studies of each split")
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the data set; the writer logs the count, time and size on disk."""
    if args.from_reports is not None:
        write_from_reports(
            args.from_reports,
            args.out,
            limit=args.limit,
            seed=args.seed,
            size=args.size,
            workers=args.workers,
        )
    else:
        write_phantoms(args.out, args.n, seed=args.seed, size=args.size, workers=args.workers)
    return 0
