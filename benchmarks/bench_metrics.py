"""Time the report metrics on 590 pairs, the size of the IU X-ray test split.

References are the 590 real test reports; hypotheses are the first 590 training
reports (a fixed pairing, so the scores are low but not trivial), both cleaned into
the R2Gen form. CE uses 590 pairs of random (seeded) label sets.

Run from the repository root:  .venv/bin/python benchmarks/bench_metrics.py [--annotation PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from rrg_core.data.reports import clean_report  # noqa: E402
from rrg_core.metrics import NLG_METRICS, clinical_efficacy, nlg_scores  # noqa: E402
from rrg_core.observations import OBSERVATIONS  # noqa: E402

DEFAULT_ANNOTATION = (
    Path(os.environ.get("RRG_IU_XRAY", REPO_ROOT.parent / "shared" / "data" / "iu_xray")) / "annotation.json"
)
NUM_PAIRS = 590
T = TypeVar("T")


def load_pairs(annotation: Path, count: int) -> tuple[list[str], list[str]]:
    """(references, hypotheses): cleaned test reports and as many cleaned training reports."""
    splits = json.loads(annotation.read_text(encoding="utf-8"))
    references = [clean_report(item["report"]) for item in splits["test"]]
    hypotheses = [clean_report(item["report"]) for item in splits["train"]]
    references = [text for text in references if text][:count]
    hypotheses = [text for text in hypotheses if text][: len(references)]
    return references, hypotheses


def random_labels(rng: np.random.Generator, count: int) -> list[dict[str, int | None]]:
    """Label sets drawn like sparse CheXpert output: mostly unmentioned, some 1/0/-1."""
    values = np.array([None, 1, 0, -1], dtype=object)
    draws = rng.choice(values, size=(count, len(OBSERVATIONS)), p=[0.6, 0.15, 0.2, 0.05])
    return [dict(zip(OBSERVATIONS, row, strict=True)) for row in draws]


def timed(function: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotation", type=Path, default=DEFAULT_ANNOTATION)
    args = parser.parse_args()

    references, hypotheses = load_pairs(args.annotation, NUM_PAIRS)
    print(f"{len(references)} report pairs from {args.annotation}")

    scores, seconds = timed(nlg_scores, references, hypotheses)
    print(f"\nall NLG metrics in one call: {seconds:.2f} s")
    for name, value in scores.items():
        print(f"  {name:8s} {value:.4f}")

    print("\none metric per call:")
    for name in ("BLEU_1", *NLG_METRICS[4:]):
        label = "BLEU_1-4" if name == "BLEU_1" else name
        _, seconds = timed(nlg_scores, references, hypotheses, metrics=(name,))
        print(f"  {label:8s} {seconds:.2f} s")
    _, seconds = timed(nlg_scores, references[:1], hypotheses[:1], metrics=("METEOR",))
    print(f"  METEOR on 1 pair (JVM start-up and paraphrase table): {seconds:.2f} s")

    rng = np.random.default_rng(0)
    truth, predicted = random_labels(rng, len(references)), random_labels(rng, len(references))
    ce, seconds = timed(clinical_efficacy, truth, predicted)
    print(f"\nclinical efficacy on {ce.num_reports} label pairs: {seconds * 1000:.1f} ms")
    for name, prf in (("micro", ce.micro), ("macro", ce.macro)):
        print(f"  {name}: P {prf.precision:.4f}  R {prf.recall:.4f}  F1 {prf.f1:.4f}  support {prf.support}")


if __name__ == "__main__":
    main()
