"""benchmarks/bench_dcrrg_training.py runs and prints a row per step, Step 4 in both trained forms."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dcrrg_training.py"


def test_prints_step1_and_both_step4_forms(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_dcrrg_training", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--sizes", "32", "--batch", "1", "--steps", "1", "--repeats", "1", "--warmup", "0"]
    argv += ["--vocab-size", "16", "--report-length", "6"]
    assert bench.main(argv) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    names = [" ".join(row[:-4]) for row in rows]
    assert names == ["Step 1 (DCCLIP image side)", "Step 4 (prompt tuning)", "Step 4 (decoder FT)"]
    assert all(row[-4] == "32" and float(row[-2]) > 0 for row in rows)
