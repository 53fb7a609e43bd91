"""``python -m train gpu-check``: its whole path on the CPU with tiny models and sizes (the real run
needs a GPU and the paper presets' full widths)."""

from __future__ import annotations

import json
import os

import pytest

from train.__main__ import main

TINY_DCRRG = [
    "image_size=64", "model.pretrained=none", "model.text_encoder=tiny-random", "model.d_model=32",
    "model.d_ff=64", "model.n_heads=2", "model.projection_dim=32", "model.projection_hidden=32",
    "model.n_prefix=2", *(f"step{k}.batch_size=4" for k in (1, 2, 3, 4)),
]  # fmt: skip
TINY_UAR = [
    "image_size=32", "train_resize=32", "dvae.hidden=4", "dvae.embed_dim=4", "dvae.codebook_size=16",
    "dvae.batch_size=8", "dvae.reconstructions=2", "dvae.probe_epochs=0", "model.d_model=16",
    "model.n_heads=2", "model.d_ff=32", "model.n_basis=32", "stage1.batch_size=4", "stage2.batch_size=4",
    "beam_size=1",
]  # fmt: skip


@pytest.mark.timeout(600)
def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RRG_TRAIN_THREADS", os.environ.get("RRG_TRAIN_THREADS", "1"))
    argv = ["gpu-check", "--out", str(tmp_path), "--phantoms", "24", "--iterations", "1",
            "--eval-studies", "2", "--device", "cpu", "--workers", "0"]  # fmt: skip
    argv += [a for item in TINY_DCRRG for a in ("--set-dcrrg", item)]
    argv += [a for item in TINY_UAR for a in ("--set-uar", item)]
    assert main(argv) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["iterations"] == 1
    assert set(report["models"]["dcrrg"]["images_per_second"]) == {"step1", "step2", "step3", "step4"}
    assert set(report["models"]["uar"]["images_per_second"]) == {"dvae", "stage1", "stage2"}
    for result in report["models"].values():
        assert all(rate is None or rate > 0 for rate in result["images_per_second"].values())
        assert result["peak_gpu_memory_gib"] is None  # no GPU here
        assert result["test"]["studies"] == 2 and "BLEU_4" in result["test"]
    assert "| dcrrg | images/s: step1" in capsys.readouterr().out


def test_gpu_check_refuses_missing_reports(tmp_path):
    argv = ["gpu-check", "--out", str(tmp_path), "--reports", str(tmp_path / "none.json"), "--device", "cpu"]
    assert main(argv) == 2
