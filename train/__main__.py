"""Entry point of ``python -m train``: one sub-command per job, each in its own module."""

from __future__ import annotations

import argparse
import logging
import sys

from rrg_core.errors import RRGError
from train import (
    dcrrg_cmd,
    dvae_cmd,
    evaluate_cmd,
    export_corrections_cmd,
    gpu_check_cmd,
    index_cmd,
    phantoms_cmd,
    pointing_game_cmd,
    review_cmd,
    uar_cmd,
    vocab_cmd,
)

# Each command module exposes add_parser(subparsers) and run(args) -> int.
COMMANDS = (
    vocab_cmd,
    phantoms_cmd,
    evaluate_cmd,
    dcrrg_cmd,
    dvae_cmd,
    uar_cmd,
    review_cmd,
    index_cmd,
    pointing_game_cmd,
    export_corrections_cmd,
    gpu_check_cmd,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(subparsers).set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print a one-line message and exit 2, never a traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return args.run(args)
    except RRGError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
