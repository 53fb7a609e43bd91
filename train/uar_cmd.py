"""``python -m train uar``: the command line only; training lives in :mod:`train.uar.cli`.

Kept apart so that ``python -m train`` builds its parser without importing the models; the training
code loads when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PRESETS = ("demo", "cpu", "paper")  # train/configs/uar_<name>.yaml; checked again when loaded


def add_common(p: argparse.ArgumentParser) -> None:
    """The options ``train uar`` and ``train dvae`` share."""
    p.add_argument("--preset", required=True, help=f"one of {', '.join(PRESETS)} (train/configs/uar_*.yaml)")
    p.add_argument("--data", required=True, type=Path, help="data folder (R2Gen layout with images/)")
    p.add_argument("--out", required=True, type=Path, help="run folder (RUN_DIR)")
    p.add_argument("--seed", type=int, default=0, help="seed for everything (default 0)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field, e.g. stage1.lr=3e-4 or dvae.epochs=2")  # fmt: skip
    p.add_argument("--workers", type=int, default=2, help="image decoding processes for the cache (0: none)")
    p.add_argument("--extra", type=Path, help="extra R2Gen-layout data (its train split joins training)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command."""
    p = subparsers.add_parser(
        "uar", help="train UAR (LSU tokenizer, stage 1, stage 2) into a resumable run folder",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_common(p)
    p.add_argument(
        "--stages", default="tokenizer,1,2",
        help="stages to run: some of tokenizer,1,2 (default all; 'dvae' is read as 'tokenizer')",
    )  # fmt: skip
    p.add_argument(
        "--tokenizer", "--dvae", dest="tokenizer", type=Path,
        help="an LSU tokenizer checkpoint (a dVAE from `python -m train dvae`, or another run's "
        "tokenizer/) instead of RUN_DIR/tokenizer",
    )  # fmt: skip
    return p


def run(args: argparse.Namespace) -> int:
    """Train UAR (imports the models only now)."""
    from train.uar import cli

    return cli.run_uar(args)
