"""``python -m train vocab``: build the word vocabulary of a data set's training reports."""

from __future__ import annotations

import argparse
from pathlib import Path

from rrg_core.data.datasets import detect_spec, read_annotation
from rrg_core.data.vocab import Vocabulary


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command."""
    parser = subparsers.add_parser("vocab", help="build and print the vocabulary of the training reports")
    parser.add_argument("--data", required=True, type=Path, help="data set folder (or its annotation.json)")
    parser.add_argument(
        "--min-count",
        type=int,
        help="keep words seen at least this often (default: 3 for IU X-ray, 10 for MIMIC-CXR)",
    )
    parser.add_argument("--out", type=Path, help="write vocab.json here")
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the vocabulary from the train split, print its size, optionally save it."""
    splits = read_annotation(args.data)
    spec = detect_spec(splits["train"])
    min_count = args.min_count if args.min_count is not None else spec.min_count
    vocab = Vocabulary.build((record.report for record in splits["train"]), min_count=min_count)
    print(
        f"{spec.name}: {len(splits['train'])} training reports, min count {min_count}: "
        f"vocabulary of {len(vocab)} tokens ({len(vocab) - 4} words + 4 special tokens)"
    )
    if args.out:
        vocab.save(args.out)
        print(f"wrote {args.out}")
    return 0
