"""``python -m train index``: build and save the retrieval indexes of a checkpoint over a study set.

For a DCRRG checkpoint: the DCCLIP global image embeddings of the split's studies and the DCCLIP
global text embeddings of their reports; for UAR: the CRA global image and report features. Each is
saved as ``RUN_DIR/index/image`` and ``RUN_DIR/index/report`` (:mod:`rrg_core.retrieval.files`), tied
to the checkpoint's weights by their hash. Studies without an image or with an empty report are left
out (there would be nothing to show for them).

Then the out-of-domain threshold (:mod:`rrg_core.retrieval.domain`): the validation split's studies
(``--calibrate-on``, never outside images) are scored by their Mahalanobis distance to the indexed
studies' image embeddings, and the ``--percentile``-th percentile of their scores is saved with those
statistics as ``RUN_DIR/index/domain.json`` and ``domain.safetensors``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from rrg_core.checkpoints import data_fingerprint
from rrg_core.data.datasets import R2GenDataset, read_annotation
from rrg_core.errors import DatasetError, RRGError
from rrg_core.retrieval import (
    EMBEDDINGS,
    build_indexes,
    calibrate,
    index_folder,
    indexable,
    save_calibration,
    save_index,
)
from rrg_core.retrieval.domain import DEFAULT_PERCENTILE, DEFAULT_SHRINKAGE
from train.evaluate_cmd import checkpoint_and_generator, image_stacks

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command."""
    parser = subparsers.add_parser(
        "index",
        help="build a checkpoint's retrieval indexes (image and report embeddings of a split)",
        description="Embed every study of a split (the training split by default) with a DCRRG or UAR "
        "checkpoint and save the image and report indexes beside it, in RUN_DIR/index/.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder (RUN_DIR)")
    parser.add_argument("--data", required=True, type=Path, help="data set folder (R2Gen layout + images)")
    parser.add_argument("--split", default="train", help="split to index (default train)")
    parser.add_argument("--batch", type=int, default=32, help="studies per forward pass (default 32)")
    parser.add_argument("--limit", type=int, help="index the first N studies of the split only")
    parser.add_argument("--workers", type=int, default=2, help="image loading processes (default 2; 0: none)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--calibrate-on", default="val",
        help="split whose studies calibrate the out-of-domain threshold (default val; 'none': skip)",
    )  # fmt: skip
    parser.add_argument(
        "--percentile", type=float, default=DEFAULT_PERCENTILE,
        help=f"percentile of the calibration scores taken as the threshold (default {DEFAULT_PERCENTILE:g})",
    )  # fmt: skip
    parser.add_argument(
        "--shrinkage", type=float, default=DEFAULT_SHRINKAGE,
        help=f"covariance shrinkage of the out-of-domain statistics (default {DEFAULT_SHRINKAGE:g})",
    )  # fmt: skip
    return parser


def run(args: argparse.Namespace) -> int:
    """Build and save both indexes and print a one-line summary; user errors raise RRGError (exit 2)."""
    for name, value in {"--batch": args.batch, "--limit": args.limit}.items():
        if value is not None and value < 1:
            raise RRGError(f"{name} must be at least 1, got {value}")
    if args.workers < 0:
        raise RRGError(f"--workers must be 0 or more, got {args.workers}")
    began = time.perf_counter()
    # The checkpoint first: a refused one should not wait for the data.
    checkpoint, generator = checkpoint_and_generator(args.checkpoint, args.device, beam_size=1)
    if checkpoint.kind not in EMBEDDINGS:
        raise RRGError(
            f"{args.checkpoint} is a {checkpoint.kind!r} checkpoint; indexes are built from "
            f"{' or '.join(EMBEDDINGS)} checkpoints"
        )
    generator.batch_size = args.batch
    splits = read_annotation(args.data)
    if args.split not in splits:
        raise DatasetError(f"{args.data}: no split {args.split!r} (has: {', '.join(splits)})")
    chosen = splits[args.split][: args.limit]
    records = indexable(chosen)
    if not records:
        raise DatasetError(f"{args.data}: split {args.split!r} has no study with an image and a report")
    if len(records) < len(chosen):
        logger.info("left out %d studies without an image or a report", len(chosen) - len(records))
    # The annotation is passed in so the file is read once and only the kept studies' images are checked.
    dataset = R2GenDataset(args.data, args.split, annotation={**splits, args.split: records})
    indexes = build_indexes(
        generator, checkpoint.kind, checkpoint.sha256, records, image_stacks(dataset, args.workers),
        data_fingerprint=data_fingerprint(args.data), split=args.split,
    )  # fmt: skip
    for kind, index in indexes.items():
        save_index(index, index_folder(checkpoint.folder, kind), data_root=args.data)
    shapes = ", ".join(f"{kind} {len(index)}x{index.dim}" for kind, index in indexes.items())
    calibrated = _calibrate(args, checkpoint, generator, splits, records)
    print(
        f"indexed {len(records)} {args.split} studies of {args.data} with {checkpoint.kind} "
        f"({checkpoint.sha256[:12]}): {shapes} -> {checkpoint.folder / 'index'} "
        f"in {time.perf_counter() - began:.1f} s{calibrated}"
    )
    return 0


def _calibrate(args: argparse.Namespace, checkpoint, generator, splits: dict, train: list) -> str:
    """Calibrate and save the out-of-domain threshold on ``--calibrate-on``; returns a summary note."""
    split = args.calibrate_on
    if split == "none":
        return "; no out-of-domain calibration (--calibrate-on none)"
    records = [r for r in splits.get(split, []) if r.image_paths]
    if not records:
        logger.warning(
            "no %r split with images in %s: the out-of-domain threshold is not calibrated", split, args.data
        )
        return f"; no out-of-domain calibration (no {split} studies with images)"
    embeddings = {}
    for name, chosen in ((args.split, train), (split, records)):  # the raw vectors, not the index's unit rows
        dataset = R2GenDataset(args.data, name, annotation={**splits, name: chosen})
        embeddings[name] = generator.embed_images(list(image_stacks(dataset, args.workers)))
    calibration = calibrate(
        embeddings[args.split], embeddings[split], checkpoint_sha256=checkpoint.sha256, split=split,
        shrinkage=args.shrinkage, percentile=args.percentile,
        data_description="synthetic phantoms" if (Path(args.data) / "masks").is_dir() else None,
    )  # fmt: skip
    path = save_calibration(calibration, checkpoint.folder)
    found = calibration.calibration
    return (
        f"; out-of-domain threshold {found.threshold:.3f} (p{found.percentile:g} of the Mahalanobis "
        f"distances of {found.val_studies} {split} studies) -> {path}"
    )
