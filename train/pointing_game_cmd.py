"""``python -m train pointing-game``: do a model's heatmaps point at the findings of a phantom split?

A DCRRG checkpoint plays with its captum attributions (``--method``, or ``all``), a UAR checkpoint
with the heatmaps of its report's finding words (``--text generated`` or ``reference``): TIR
attention, and the findings head's evidence where the model has the head (``--heatmaps``).
Prints, per finding and overall, the hit rate, the uniform-map baseline of the same trials and
their ratio; ``--out`` writes the same as JSON. See :mod:`rrg_core.explain.phantom_pointing`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from rrg_core.errors import RRGError

logger = logging.getLogger(__name__)

# Written out rather than imported: the attribution code loads timm and captum, which `python -m train`
# should not pay for at start-up (test_explain_attribution checks they match rrg_core.explain.attribution).
METHODS = ("integrated_gradients", "gradcam", "occlusion")
IG_STEPS = 24


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command."""
    parser = subparsers.add_parser(
        "pointing-game",
        help="pointing game of a checkpoint's heatmaps against a phantom split's finding masks",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a dcrrg or uar checkpoint folder")
    parser.add_argument("--data", required=True, type=Path, help="phantom data set folder (with masks/)")
    parser.add_argument("--split", default="test", help="split to play on (default test)")
    parser.add_argument(
        "--method",
        default="gradcam",
        help=f"DCRRG attribution: {', '.join(METHODS)} or all (default gradcam)",
    )
    parser.add_argument(
        "--text", choices=("generated", "reference"), default="generated",
        help="UAR: heatmaps of the generated report's words or of the study's own report (teacher-forced)",
    )  # fmt: skip
    parser.add_argument(
        "--heatmaps", choices=("attention", "evidence", "both"),
        help="UAR: each finding word's TIR attention, the findings head's evidence for the observation it "
        "names, or both (default: both for a model with a findings head, else attention)",
    )  # fmt: skip
    parser.add_argument(
        "--tolerance", type=int, default=0,
        help="count a peak within this many mask pixels of the finding as a hit (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--native-grid", action="store_true",
        help="DCRRG: play each map at the method's own resolution where coarser (Grad-CAM's feature grid)",
    )  # fmt: skip
    parser.add_argument("--limit", type=int, help="play on the first N studies of the split only")
    parser.add_argument("--ig-steps", type=int, default=IG_STEPS, help=f"IG steps (default {IG_STEPS})")
    parser.add_argument(
        "--gradcam-layer",
        help="DCRRG Grad-CAM: a dotted block name in the image encoder's body (default: the encoder's "
        "own, blocks.4 for EfficientNet-Lite0; '' for the body's output)",
    )
    parser.add_argument("--occlusion-window", type=int, help="occlusion square in input pixels (default 1/8)")
    parser.add_argument("--occlusion-stride", type=int, help="occlusion stride (default: the window)")
    parser.add_argument("--beam-size", type=int, default=3, help="UAR beam size (default 3)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    return parser


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint, play, print the tables; user errors raise RRGError (exit 2)."""
    from rrg_core.checkpoints import load_checkpoint
    from rrg_core.explain.attribution import AttributionSettings, ObservationAttributor, method_name
    from rrg_core.explain.phantom_pointing import dcrrg_pointing, uar_pointing
    from rrg_core.explain.pointing import PointingReport
    from rrg_core.generators import load_generator

    if args.limit is not None and args.limit < 1:
        raise RRGError(f"--limit must be at least 1, got {args.limit}")
    if args.tolerance < 0:
        raise RRGError(f"--tolerance must be 0 or more pixels, got {args.tolerance}")
    if args.beam_size < 1:
        raise RRGError(f"--beam-size must be at least 1, got {args.beam_size}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    checkpoint = load_checkpoint(args.checkpoint, device=device)
    if checkpoint.kind not in ("dcrrg", "uar"):
        raise RRGError(
            f"{args.checkpoint}: a {checkpoint.kind!r} checkpoint has no heatmaps; give dcrrg or uar"
        )
    generator = load_generator(checkpoint, device, beam_size=args.beam_size)
    reports: list[PointingReport] = []
    if checkpoint.kind == "dcrrg":
        settings = AttributionSettings(
            ig_steps=args.ig_steps,
            occlusion_window=args.occlusion_window,
            occlusion_stride=args.occlusion_stride,
            gradcam_layer=args.gradcam_layer,
        )
        attributor = ObservationAttributor.from_generator(generator, settings)
        methods = list(METHODS) if args.method.strip().lower() == "all" else [method_name(args.method)]
        for method in methods:
            reports.append(
                dcrrg_pointing(
                    attributor,
                    args.data,
                    args.split,
                    method,
                    limit=args.limit,
                    native=args.native_grid,
                    tolerance=args.tolerance,
                )
            )
    else:
        has_head = generator.model.findings_head is not None
        chosen = args.heatmaps or ("both" if has_head else "attention")
        for heatmaps in ("attention", "evidence") if chosen == "both" else (chosen,):
            options = dict(text=args.text, heatmaps=heatmaps, limit=args.limit, tolerance=args.tolerance)
            reports.append(uar_pointing(generator, args.data, args.split, **options))
    print(f"{args.checkpoint} on {args.data} split {args.split!r}\n")
    for report in reports:
        print(report.format_table())
        overall = report.overall
        print(
            f"\n{report.method}: hit rate {overall.rate:.3f} over {overall.trials} trials; uniform map "
            f"{overall.uniform:.3f} ({overall.lift:.2f}x); {report.seconds:.1f} s\n"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps([r.to_dict() for r in reports], indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0
