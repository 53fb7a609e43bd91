"""``python -m train evaluate``: score a checkpoint (and/or the two baselines) on a data split.

Writes ``OUT/metrics.json`` (every result, keyed by model name), ``OUT/generated.jsonl`` (one line
per study and model: id, model, cleaned reference and generated text, labels of both) and prints a
Markdown table. With ``--checkpoint`` the model's result is also merged into the checkpoint's own
metrics.json under the split's name.

Models load through :func:`rrg_core.generators.load_generator` (one mapping from a checkpoint kind to
its generator); a kind that writes no reports is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from rrg_core import load_generator
from rrg_core.baselines import MostFrequentReport, NearestNeighbourReport
from rrg_core.checkpoints import Checkpoint, load_checkpoint, update_metrics
from rrg_core.data.datasets import R2GenDataset, StudyRecord, read_annotation
from rrg_core.errors import DatasetError, RRGError
from rrg_core.evaluation import (
    EvaluationResult,
    ReportGenerator,
    evaluate_model,
)
from rrg_core.evaluation_tables import format_alignment_table, format_image_dependence_table, format_table
from rrg_core.image_dependence import ImageDependence, derangement, measure_image_dependence
from rrg_core.metrics import JAVA_METRICS, NLG_METRICS, UNCERTAIN_AS, java_available
from rrg_core.progress import progress_bar

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint and/or the baselines on a split (NLG, CE, AUROC, P@K, speed)",
        description="Generate a report for every study of a split and score it. Without --checkpoint "
        "only the baselines (most frequent training report, nearest training neighbour) are scored.",
    )
    parser.add_argument("--checkpoint", type=Path, help="checkpoint folder (its config.json names the kind)")
    parser.add_argument("--data", required=True, type=Path, help="data set folder (R2Gen layout + images)")
    parser.add_argument("--split", default="test", help="split to evaluate (default test)")
    parser.add_argument("--out", required=True, type=Path, help="folder for metrics.json and generated.jsonl")
    parser.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score the two training-split baselines (default: on)",
    )
    parser.add_argument("--limit", type=int, help="evaluate the first N studies of the split only")
    parser.add_argument("--beam-size", type=int, default=3, help="beam size for the model (default 3)")
    parser.add_argument("--batch-size", type=int, default=16, help="studies per generate call (default 16)")
    parser.add_argument(
        "--metrics",
        nargs="+",
        choices=NLG_METRICS,
        default=list(NLG_METRICS),
        metavar="METRIC",
        help=f"NLG metrics (default all: {' '.join(NLG_METRICS)}); METEOR needs Java",
    )
    parser.add_argument(
        "--image-dependence",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also count distinct drafts and score CE with every study given another study's images "
        "(one more generation pass per model; default: on)",
    )
    parser.add_argument("--workers", type=int, default=2, help="image loading processes (default 2; 0: none)")
    parser.add_argument("--device", help="model's torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--uncertain-as",
        choices=UNCERTAIN_AS,
        default=UNCERTAIN_AS[0],
        help="how CE counts uncertain (-1) labels, both sides (default negative; recorded in metrics.json)",
    )
    return parser


def image_stacks(dataset: R2GenDataset | Subset, workers: int) -> DataLoader:
    """The split's image stacks in order, read by ``workers`` processes (one study at a time).

    Worker processes also keep image loading off the main process's torch threads: there, stacking
    a study's views with two threads competing for a busy 2-core CPU cost ~15 ms instead of ~0.03 ms.
    """
    return DataLoader(
        _ImagesOnly(dataset), batch_size=None, num_workers=workers, prefetch_factor=8 if workers else None
    )


class _ImagesOnly(Dataset[torch.Tensor]):
    """A dataset's image stacks only (the rest of an item would be pickled between processes for nothing)."""

    def __init__(self, dataset: R2GenDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.dataset[index]["images"]


def _check_args(args: argparse.Namespace) -> None:
    if args.checkpoint is None and not args.baselines:
        raise RRGError("nothing to evaluate: give --checkpoint, or leave --baselines on")
    counts = {"--limit": args.limit, "--beam-size": args.beam_size, "--batch-size": args.batch_size}
    for name, value in counts.items():
        if value is not None and value < 1:
            raise RRGError(f"{name} must be at least 1, got {value}")
    if args.workers < 0:
        raise RRGError(f"--workers must be 0 or more, got {args.workers}")
    if JAVA_METRICS.intersection(args.metrics) and not java_available():
        raise RRGError("METEOR needs Java (no `java` on the PATH): install Java 17 or drop METEOR")


def checkpoint_and_generator(
    folder: Path, device: str | None, *, beam_size: int
) -> tuple[Checkpoint, ReportGenerator]:
    """A checkpoint and its report generator on ``device`` (default: cuda if available, else cpu);
    a kind that writes no reports is refused."""
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    checkpoint = load_checkpoint(folder, device=target)
    return checkpoint, load_generator(checkpoint, target, beam_size=beam_size)


def _dataset(args: argparse.Namespace, split: str, records: list[StudyRecord], splits: dict) -> R2GenDataset:
    # The annotation is passed in so the file is read once and --limit narrows the image check too.
    return R2GenDataset(args.data, split, load_images=True, annotation={**splits, split: records})


def _baselines(args: argparse.Namespace, splits: dict[str, list[StudyRecord]]) -> list[ReportGenerator]:
    train = splits.get("train")
    if not train:
        raise DatasetError(f"{args.data}: the baselines need a non-empty 'train' split")
    dataset = _dataset(args, "train", train, splits)
    images = progress_bar(
        image_stacks(dataset, args.workers), total=len(dataset), unit="study", desc="neighbour bank"
    )
    return [MostFrequentReport.fit(train), NearestNeighbourReport.fit(train, images, views=dataset.views)]


def _write_outputs(
    out: Path, results: dict[str, EvaluationResult], dependence: dict[str, ImageDependence]
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    metrics = {name: _result_dict(result, dependence.get(name)) for name, result in results.items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    with open(out / "generated.jsonl", "w", encoding="utf-8") as handle:
        for name, result in results.items():
            for study in result.studies:
                line = {
                    "id": study.id,
                    "model": name,
                    "reference": study.reference,
                    "generated": study.generated,
                    "reference_labels": study.reference_labels,
                    "generated_labels": study.generated_labels,
                }
                handle.write(json.dumps(line) + "\n")


def _result_dict(result: EvaluationResult, dependence: ImageDependence | None) -> dict:
    return {**result.to_dict(), "image_dependence": None if dependence is None else dependence.to_dict()}


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the outputs, print the table; user errors raise RRGError (exit 2)."""
    _check_args(args)
    checkpoint, generators = None, []
    if args.checkpoint is not None:  # first: a refused checkpoint should not wait for the data
        checkpoint, model = checkpoint_and_generator(args.checkpoint, args.device, beam_size=args.beam_size)
        generators.append(model)
    splits = read_annotation(args.data)
    if args.split not in splits:
        raise DatasetError(f"{args.data}: no split {args.split!r} (has: {', '.join(splits)})")
    records = splits[args.split][: args.limit]
    if not records:
        raise DatasetError(f"{args.data}: split {args.split!r} has no studies")
    dataset = _dataset(args, args.split, records, splits)
    if args.baselines:
        generators.extend(_baselines(args, splits))
    results: dict[str, EvaluationResult] = {}
    dependence: dict[str, ImageDependence] = {}
    for generator in generators:
        if generator.name in results:
            raise RRGError(f"two models are named {generator.name!r}")
        images = image_stacks(dataset, args.workers)
        result = evaluate_model(
            generator, records, images, batch_size=args.batch_size, metrics=args.metrics,
            uncertain_as=args.uncertain_as,
        )  # fmt: skip
        results[generator.name] = result
        if args.image_dependence:
            swapped = image_stacks(Subset(dataset, derangement(len(dataset))), args.workers)
            dependence[generator.name] = measure_image_dependence(
                generator, records, result, swapped, batch_size=args.batch_size
            )
    _write_outputs(args.out, results, dependence)
    print(f"{args.data} split {args.split!r}, {len(records)} studies\n")
    print(format_table(results))
    if dependence:
        print(f"\n{format_image_dependence_table(dependence)}")
    alignment = format_alignment_table(results)
    if alignment:  # models with a joint image-report space (DCCLIP, UAR's CRA)
        print(f"\n{alignment}")
    print(f"\nwrote {args.out / 'metrics.json'} and {args.out / 'generated.jsonl'}")
    if checkpoint is not None:
        name = generators[0].name
        update_metrics(checkpoint.folder, {args.split: _result_dict(results[name], dependence.get(name))})
        print(f"merged the {generators[0].name} result into {checkpoint.folder / 'metrics.json'}")
    return 0
