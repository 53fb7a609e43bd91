"""``python -m train dvae``: train UAR's dVAE image tokenizer alone (the command line only).

Writes a dvae checkpoint into RUN_DIR, with validation reconstruction error and code perplexity in
its metrics.json and a few validation views as original | reconstruction PNGs in
RUN_DIR/reconstructions/. The dVAE settings are the ``dvae`` section of the UAR preset.
"""

from __future__ import annotations

import argparse

from train.uar_cmd import add_common


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command."""
    p = subparsers.add_parser(
        "dvae", help="train UAR's dVAE image tokenizer alone (reconstructions, code perplexity)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_common(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Train the dVAE (imports the models only now)."""
    from train.uar import cli

    return cli.run_dvae(args)
