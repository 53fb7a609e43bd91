"""``python -m train review``: both drafts and their evidence for X-ray files, as JSON for scripts.

Each IMAGE argument is one study; join a study's views with commas (``frontal.dcm,lateral.png``).
The output is one JSON object per study (a :class:`rrg_core.review_result.ReviewResult`), one per
line with ``--jsonl``, else a JSON list.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command."""
    p = subparsers.add_parser(
        "review", help="review X-ray files with both models and print the results as JSON",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("images", nargs="+", metavar="IMAGE", help="a study's view files, comma-separated")
    p.add_argument(
        "--checkpoints", type=Path, help="folder of the DCRRG and UAR checkpoints (default RRG_CHECKPOINTS)"
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--beam-size", type=int, default=3, help="beam width of both drafts (default 3)")
    p.add_argument("--neighbours", type=int, default=5, help="retrieval neighbours per study (default 5)")
    p.add_argument("--no-attention", action="store_true", help="leave UAR's attention maps out of the JSON")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per line instead of a list")
    return p


def run(args: argparse.Namespace) -> int:
    """Load the pipeline once, review every study, print JSON on stdout."""
    from rrg_core import load_pipeline
    from rrg_core.errors import RRGError

    if args.beam_size < 1:
        raise RRGError(f"--beam-size must be at least 1, got {args.beam_size}")
    pipeline = load_pipeline(
        args.checkpoints, device=args.device, beam_size=args.beam_size, neighbours=args.neighbours
    )
    studies = [[part for part in argument.split(",") if part] for argument in args.images]
    results = [result.to_dict() for result in pipeline.review_batch(studies, study_ids=args.images)]
    if args.no_attention:
        for result in results:
            result["attention"] = None
    if args.jsonl:
        for result in results:
            sys.stdout.write(json.dumps(result) + "\n")
    else:
        json.dump(results, sys.stdout, indent=1)
        sys.stdout.write("\n")
    return 0
