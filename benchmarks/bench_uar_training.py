"""Training throughput of UAR's dVAE and of UAR stage 2 on this machine, at the presets' sizes.

- dVAE: forward + backward + AdamW step on a batch of single views (Gumbel-softmax at tau 0.5,
  reconstruction + KL), the preset's widths, codebook and input size.
- Stage 2: forward + backward + AdamW step of eq 13 with lambdas {1, 1, 1} (CE, triplet loss, TIR
  mask in the attention and its loss) on dVAE token ids (the dVAE is frozen then, and ``train uar``
  computes the ids once when training has no random crop), random reports of ``--report-length``
  tokens, two views.

Weights and inputs are random (speed does not depend on the values). Each figure is the best of
``--repeats`` timings of ``--steps`` steps after one warm-up step.

Run from the repository root:  .venv/bin/python benchmarks/bench_uar_training.py [--presets demo cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from rrg_core.models.uar import DVAE  # noqa: E402
from rrg_core.models.uar import UAR  # noqa: E402
from train.uar.presets import build_preset, dvae_config, uar_config  # noqa: E402

Step = Callable[[], None]


def dvae_step(preset: dict, generator: torch.Generator) -> tuple[Step, int]:
    """One dVAE training step; returns it and its images per step."""
    model = DVAE(dvae_config(preset)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch, config = preset["dvae"]["batch_size"], model.config
    images = torch.randn(batch, config.in_channels, config.image_size, config.image_size, generator=generator)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(images, 0.5).losses.total.backward()
        optimizer.step()

    return run, batch


def stage2_step(preset: dict, generator: torch.Generator, length: int, vocab: int = 1000) -> tuple[Step, int]:
    """One stage-2 training step on token ids; returns it and its studies per step."""
    dvae = dvae_config(preset)
    config = uar_config(preset, vocab_size=vocab, max_length=60, views=2, dvae=dvae, special=(0, 1, 2))
    model = UAR(config).train()
    model.set_stage(2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch, grid = preset["stage2"]["batch_size"], config.grid_size
    tokens = torch.randint(0, config.codebook_size, (batch, 2, grid, grid), generator=generator)
    reports = torch.randint(4, vocab, (batch, length), generator=generator)
    reports[:, 0], reports[:, -1] = 1, 2

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(tokens, reports).loss.backward()
        optimizer.step()

    return run, batch


def best_rate(step: Step, per_step: int, steps: int, repeats: int) -> float:
    """Examples per second: the best of ``repeats`` timings of ``steps`` steps (after a warm-up)."""
    step()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - started)
    return steps * per_step / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["demo", "cpu"], help="default: demo cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--report-length", type=int, default=40, help="report ids per study (default 40)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} thread(s), "
          f"torch {torch.__version__}")  # fmt: skip
    print("| preset | dVAE input | dVAE images/s | UAR d, L | stage-2 studies/s |")
    print("|---|---|---:|---|---:|")
    for name in args.presets:
        preset = build_preset(name, [])
        dvae_rate = best_rate(*dvae_step(preset, generator), args.steps, args.repeats)
        run, batch = stage2_step(preset, generator, args.report_length)
        stage_rate = best_rate(run, batch, args.steps, args.repeats)
        size, grid = preset["image_size"], preset["image_size"] // preset["dvae"]["downsample"]
        print(f"| {name} | {size} px, batch {preset['dvae']['batch_size']} | {dvae_rate:.1f} | "
              f"{preset['model']['d_model']}, {2 * grid * grid} | {stage_rate:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
