"""DCRRG's reader, Table 7 and report on a split: the figures of the "drafts say what the image shows"
work.

- The Step-1 reader's labels (the checkpoint's thresholds): micro F1 over the 13 findings and over
  all 14, macro F1 over 14; per observation AUROC and F1.
- The full report's labels (the project labeler): the same F1s, the distinct reports.
- Table-7 rows whose description contradicts the row's label (:mod:`rrg_core.table_consistency`):
  shown ones (must be 0) and withheld ones.
- Report-table disagreements: (study, finding) pairs on which the report and Table 7 differ.

Positive is the labeler's 1 (uncertain counts as not positive, the CE convention). Run from the
repository root, e.g.:
  .venv/bin/python benchmarks/measure_table7.py --checkpoint RUN --data PH --split test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from rrg_core.data.datasets import R2GenDataset, read_annotation  # noqa: E402
from rrg_core.generators import load_generator  # noqa: E402
from rrg_core.labeler import label_report  # noqa: E402
from rrg_core.metrics import auroc_per_observation  # noqa: E402
from rrg_core.observations import FINDINGS, OBSERVATIONS  # noqa: E402
from rrg_core.table_consistency import description_contradicts, hedged_finding, report_disagreements  # noqa: E402

FINDING_COLUMNS = [OBSERVATIONS.index(name) for name in FINDINGS]


def positives(text: str) -> list[int]:
    """A report's 14 labels as 0/1: positive is the labeler's 1 (uncertain is not, the CE convention)."""
    labels = label_report(text).labels
    return [int(labels[name] == 1) for name in OBSERVATIONS]


def f1(predicted: np.ndarray, truth: np.ndarray, columns: list[int]) -> float:
    """Micro F1 of 0/1 arrays (N, 14) over ``columns``."""
    p, t = predicted[:, columns], truth[:, columns]
    tp, fp, fn = (p * t).sum(), (p * (1 - t)).sum(), ((1 - p) * t).sum()
    return float(2 * tp / max(1, 2 * tp + fp + fn))


def macro(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([f1(predicted, truth, [k]) for k in range(len(OBSERVATIONS))]))


def split_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every "a checkpoint on a split" measurement takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main() -> int:
    args = split_parser(__doc__.split("\n")[0]).parse_args()
    torch.set_num_threads(args.threads)
    generator = load_generator(args.checkpoint, "cpu", beam_size=3, expected_kind="dcrrg")
    splits = read_annotation(args.data)
    records = splits[args.split]
    dataset = R2GenDataset(args.data, args.split, annotation=splits)
    tables, reports = [], []
    for start in range(0, len(dataset), 16):
        drafts, rows = generator.review_batch(
            [dataset[i]["images"] for i in range(start, min(start + 16, len(dataset)))]
        )
        tables += rows
        reports += [generator.vocab.decode(ids) for ids in drafts.token_ids]
    truth = np.array([positives(r.report) for r in records])
    reader = np.array([[row.label for row in table] for table in tables])
    written = np.array([positives(t) for t in reports])
    probabilities = np.array([[row.probability for row in table] for table in tables])
    print(f"{args.checkpoint} on {args.data} {args.split}: {len(records)} studies")
    for name, labels in (("reader", reader), ("report", written)):
        micro13, micro14 = f1(labels, truth, FINDING_COLUMNS), f1(labels, truth, list(range(14)))
        print(f"{name}: F1 micro over 13 findings {micro13:.3f}, over 14 {micro14:.3f}, "
              f"macro over 14 {macro(labels, truth):.3f}")  # fmt: skip
    print(f"distinct reports: {len(set(reports))}/{len(reports)}")
    rows = [row for table in tables for row in table]
    shown = sum(
        bool(r.description) and description_contradicts(r.observation, r.label, r.description) for r in rows
    )
    print(f"Table-7 rows: {len(rows)}; shown descriptions contradicting their label: {shown}; "
          f"withheld: {sum(bool(r.withheld) for r in rows)}")  # fmt: skip
    hedges = [hedged_finding(table) for table in tables]
    disagreements = [
        report_disagreements(label_report(t).labels, [r.label for r in table], hedged)
        for t, table, hedged in zip(reports, tables, hedges, strict=True)
    ]
    pairs = sum(len(d) for d in disagreements)
    print(f"report-table disagreements: {pairs} of {13 * len(reports)} (study, finding) pairs, "
          f"in {sum(bool(d) for d in disagreements)} studies; {sum(bool(h) for h in hedges)} studies "
          "abnormal with no finding over its threshold (their reports hedge the nearest)")  # fmt: skip
    print_per_observation(truth, probabilities, reader, written, ("reader", "report"))
    return 0


def print_per_observation(
    truth: np.ndarray,
    probabilities: np.ndarray,
    reader: np.ndarray,
    written: np.ndarray,
    names: tuple[str, str],
) -> None:
    """A markdown table: per observation, its positives, the reader's AUROC and both label sets' F1."""
    aurocs = auroc_per_observation(truth.astype(float), probabilities).per_observation
    print(f"| Observation | positives | AUROC | {names[0]} F1 | {names[1]} F1 |\n|---|---:|---:|---:|---:|")
    for k, name in enumerate(OBSERVATIONS):
        print(f"| {name} | {truth[:, k].sum()} | {aurocs[name]:.3f} | {f1(reader, truth, [k]):.3f} | "
              f"{f1(written, truth, [k]):.3f} |")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
