"""UAR's findings head as a reader, and how closely the drafts follow it, on a split.

- The head's labels (the checkpoint's thresholds, as the label context gives them to the decoder):
  micro F1 over the 13 findings and over all 14, macro F1 over 14; per observation AUROC and F1.
- The drafts' labels (the project labeler): the same F1s and the distinct drafts.
- How the drafts follow the head: the F1 of the drafts' labels against the head's, the (study,
  finding) pairs on which they differ, and the studies the head calls abnormal without any finding
  over its threshold (a label set the decoder can only write as a normal report).

Positive is the labeler's 1 (uncertain counts as not positive, the CE convention). Needs a
checkpoint whose decoder is given labels (the demo and cpu presets). Run from the repository root, e.g.:
  .venv/bin/python benchmarks/measure_uar_reader.py --checkpoint RUN --data PH --split test
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from measure_table7 import FINDING_COLUMNS, f1, macro, positives, print_per_observation, split_parser  # noqa: E402

from rrg_core.data.datasets import R2GenDataset, read_annotation  # noqa: E402
from rrg_core.errors import RRGError  # noqa: E402
from rrg_core.generators import load_generator  # noqa: E402
from rrg_core.labeler import label_report  # noqa: E402
from rrg_core.observations import NO_FINDING, OBSERVATIONS  # noqa: E402
from rrg_core.table_consistency import report_disagreements  # noqa: E402


@torch.no_grad()
def read_split(
    checkpoint: Path, data: Path, split: str, consistent_beams: int | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per study of the split: its draft, the head's probabilities and the head's labels."""
    generator = load_generator(checkpoint, "cpu", beam_size=3, expected_kind="uar")
    model = generator.model
    if consistent_beams is not None:  # a decoding rule only: the weights stay the checkpoint's
        model.config.consistent_beams = consistent_beams
    if not model.config.reads_labels:
        raise RRGError(f"{checkpoint}: its decoder is given no labels (label_context and label_rows off)")
    generator.eval_mode()
    dataset = R2GenDataset(data, split, annotation=read_annotation(data))
    probabilities, labels, drafts = [], [], []
    for start in range(0, len(dataset), 32):
        batch = range(start, min(start + 32, len(dataset)))
        visual = generator.visual_input([dataset[i]["images"] for i in batch])
        encoding = model.encode(visual)
        probabilities.append(torch.sigmoid(model.findings_logits(encoding)).float().cpu())
        labels.append(model.reader_states(encoding).cpu())
        drafts += [generator.vocab.decode(t) for t in generator.write(visual).tokens]
    return drafts, torch.cat(probabilities).numpy(), torch.cat(labels).numpy()


def main() -> int:
    parser = split_parser(__doc__.split("\n")[0])
    parser.add_argument(
        "--consistent-beams", type=int, default=None,
        help="decode with this many consistent beams instead of the checkpoint's setting (0: plain beam 3)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    drafts, probabilities, reader = read_split(args.checkpoint, args.data, args.split, args.consistent_beams)
    records = read_annotation(args.data)[args.split]
    truth = np.array([positives(r.report) for r in records])
    written = np.array([positives(t) for t in drafts])
    every = list(range(len(OBSERVATIONS)))
    print(f"{args.checkpoint} on {args.data} {args.split}: {len(records)} studies")
    for name, labels in (("findings head", reader), ("drafts", written)):
        print(f"{name}: F1 micro over 13 findings {f1(labels, truth, FINDING_COLUMNS):.3f}, over 14 "
              f"{f1(labels, truth, every):.3f}, macro over 14 {macro(labels, truth):.3f}")  # fmt: skip
    print(f"distinct drafts: {len(set(drafts))}/{len(drafts)}")
    print(f"drafts against the head's labels: F1 micro over 14 {f1(written, reader, every):.3f}, "
          f"over 13 findings {f1(written, reader, FINDING_COLUMNS):.3f}")  # fmt: skip
    pairs = zip(drafts, reader, strict=True)
    differ = [report_disagreements(label_report(t).labels, row.tolist()) for t, row in pairs]
    print(f"draft-head disagreements: {sum(map(len, differ))} of {13 * len(drafts)} (study, finding) pairs, "
          f"in {sum(bool(d) for d in differ)} studies")  # fmt: skip
    normal = OBSERVATIONS.index(NO_FINDING)
    unnamed = (reader[:, normal] == 0) & (reader[:, FINDING_COLUMNS].sum(axis=1) == 0)
    print(f"head calls abnormal with no finding over its threshold: {int(unnamed.sum())} studies; "
          f"their drafts read normal in {int((written[unnamed, normal] == 1).sum())}")  # fmt: skip
    print_per_observation(truth, probabilities, reader, written, ("head", "draft"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
