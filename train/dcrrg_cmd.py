"""``python -m train dcrrg``: the command line only; training lives in :mod:`train.dcrrg.cli`.

Kept apart so that ``python -m train`` builds its parser without importing the models
(transformers and timm take seconds to import): the training code loads when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from train.dcrrg.presets import PRESETS, STEP4_MODES


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command."""
    p = subparsers.add_parser(
        "dcrrg", help="train DCRRG (Steps 1-4) into a resumable run folder",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument(
        "--preset", required=True, help=f"one of {', '.join(PRESETS)} (train/configs/dcrrg_*.yaml)"
    )
    p.add_argument("--data", required=True, type=Path, help="data folder (R2Gen layout with images/)")
    p.add_argument("--out", required=True, type=Path, help="run folder (RUN_DIR)")
    p.add_argument("--steps", default="1,2,3,4", help="steps to run, e.g. 1,2,3,4 (default) or 3,4")
    p.add_argument("--seed", type=int, default=0, help="seed for everything (default 0)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--image-encoder", choices=("efficientnet_lite0", "resnet50"), help="override the preset's"
    )
    p.add_argument("--pretrained", help="image encoder weights: imagenet, none or a state-dict PATH")
    p.add_argument("--text-encoder", help="Hugging Face id or folder (default: the preset's)")
    p.add_argument("--no-balance", action="store_true", help="Step 1 without per-observation balancing")
    p.add_argument("--extra-chexpert", type=Path, help="CheXpert-style CSV of extra Step-1 images")
    p.add_argument("--extra-root", type=Path, help="folder the --extra-chexpert paths are relative to")
    p.add_argument("--extra", type=Path, help="extra R2Gen-layout data (its train split joins training)")
    p.add_argument(
        "--step4", choices=STEP4_MODES,
        help="prompt tuning, full FT, or FT of the decoder with the encoders frozen (default: the "
        "preset's step4.mode, else pt)",
    )  # fmt: skip
    p.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every step's epochs by F")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    p.add_argument("--workers", type=int, default=2, help="image decoding processes for the cache (0: none)")
    return p


def run(args: argparse.Namespace) -> int:
    """Train DCRRG (imports the models only now)."""
    from train.dcrrg import cli

    return cli.run(args)
