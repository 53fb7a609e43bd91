"""Labeler throughput on all IU X-ray reports (one core), and the label distribution they produce.

Run: ``python benchmarks/bench_labeler.py [--annotation PATH] [--repeats N]``. Two speeds are printed:
cold (the sentence cache emptied before every pass, i.e. every distinct sentence parsed once per pass)
and warm (cache kept, as in a long labelling run over similar reports).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from rrg_core.labeler import label_report  # noqa: E402
from rrg_core.labeler.core import _label_lowered  # noqa: E402
from rrg_core.observations import OBSERVATIONS, Label  # noqa: E402

DEFAULT = REPO_ROOT.parent / "shared" / "data" / "iu_xray" / "annotation.json"


def _reports(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    return [item["report"] for split in ("train", "val", "test") for item in data.get(split, [])]


def _passes(reports: list[str], repeats: int, cold: bool) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        if cold:
            _label_lowered.cache_clear()
        for text in reports:
            label_report(text)
    return len(reports) * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotation", type=Path, default=DEFAULT)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    reports = _reports(args.annotation)
    print(f"{len(reports)} IU X-ray reports, {args.repeats} passes each")
    print(f"cold cache: {_passes(reports, args.repeats, cold=True):,.0f} reports/s")
    print(f"warm cache: {_passes(reports, args.repeats, cold=False):,.0f} reports/s")
    counts: Counter = Counter()
    for text in reports:
        for name, value in label_report(text).labels.items():
            counts[name, value] += 1
    print(f"\n{'observation':28s}{'positive':>9s}{'negative':>9s}{'uncertain':>10s}{'unmentioned':>12s}")
    for name in OBSERVATIONS:
        row = [counts[name, v] for v in (Label.POSITIVE, Label.NEGATIVE, Label.UNCERTAIN, None)]
        print(f"{name:28s}{row[0]:>9d}{row[1]:>9d}{row[2]:>10d}{row[3]:>12d}")


if __name__ == "__main__":
    main()
