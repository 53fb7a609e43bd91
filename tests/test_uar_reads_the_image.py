"""UAR's drafts depend on the image: a CI-sized phantom run that must not write one report for all.

A 400-study phantom set at 64 px, the demo preset's recipe (feature tokenizer, findings head, code-
vector init, image context, small batches) at a 4 x 4 grid, about a minute on one core. The test
split's drafts must differ between studies and lose much of their CE F1 when every study is given
another study's images (``train evaluate``'s image dependence), and beat the most frequent report.
The findings head's evidence maps, which the app shows for a finding's word, must point at the
findings at least twice as often as a uniform map.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rrg_core.phantoms import write_phantoms
from train.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL_RUN = [
    "--preset", "demo", "--workers", "0", "--set", "image_size=64", "--set", "train_resize=64",
    "--set", "features.codebook_size=128", "--set", "features.probe_epochs=0",
    "--set", "model.image_context=true",
    "--set", "stage1.batch_size=8", "--set", "stage2.batch_size=8",
    "--set", "stage1.epochs=8", "--set", "stage2.epochs=8",
]  # fmt: skip


def test_uar_drafts_follow_the_image(tmp_path: Path) -> None:
    data = tmp_path / "phantoms"
    write_phantoms(data, n=400, seed=5, size=64)
    os.environ.setdefault("RRG_TRAIN_THREADS", "1")
    assert main(["uar", "--data", str(data), "--out", str(tmp_path / "uar"), *SMALL_RUN]) == 0
    out = tmp_path / "eval"
    args = [
        "evaluate", "--checkpoint", str(tmp_path / "uar"), "--data", str(data), "--split", "test",
        "--out", str(out), "--metrics", "BLEU_4", "--workers", "0",
    ]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    uar, frequent = metrics["UAR"]["image_dependence"], metrics["MostFrequentReport"]["image_dependence"]
    assert uar["distinct_drafts"] >= 0.15 * uar["num_studies"], uar
    assert uar["swapped_ce_micro_f1"] < 0.75 * uar["ce_micro_f1"], uar
    assert uar["ce_micro_f1"] > frequent["ce_micro_f1"], (uar, frequent)
    assert frequent["ce_kept"] == 1.0
    played = tmp_path / "pointing.json"
    args = [
        "pointing-game", "--checkpoint", str(tmp_path / "uar"), "--data", str(data), "--text", "reference",
        "--out", str(played),
    ]  # fmt: skip
    assert main(args) == 0
    attention, evidence = json.loads(played.read_text())
    assert attention["method"].startswith("UAR TIR") and evidence["method"].startswith("UAR findings-head")
    assert evidence["trials"] >= 20 and evidence["rate"] >= 2 * evidence["uniform"], (attention, evidence)
