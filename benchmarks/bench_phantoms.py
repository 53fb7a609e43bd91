"""Phantom generation speed at 256x256: images/s for render only and for render + write (PNGs, masks).

Usage: ``python benchmarks/bench_phantoms.py [--n 100] [--size 256]``. One study = two images.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rrg_core.phantoms.generate import make_study
from rrg_core.phantoms.writer import write_phantoms


def main(argv: list[str] | None = None) -> int:
    """Time both paths and print images/s."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100, help="studies per measurement")
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)
    make_study(0, 0, args.size)  # warm up imports and caches
    start = time.perf_counter()
    for i in range(args.n):
        make_study(0, i, args.size)
    render = time.perf_counter() - start
    print(f"render only:         {2 * args.n / render:7.1f} images/s ({args.n} studies, {args.size}px)")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_phantoms(Path(tmp) / "ph", args.n, seed=0, size=args.size)
        total = time.perf_counter() - start
    print(f"render + write PNGs: {2 * args.n / total:7.1f} images/s (16-bit images, masks, annotation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
