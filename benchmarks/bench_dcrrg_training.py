"""Training throughput of DCRRG Step 1 (DCCLIP image side) and Step 4 (PT, decoder FT) on this machine.

- Step 1: forward + backward + AdamW step of the image-side Step-1 loss (all 14 observations,
  uncertain labels masked) through the default EfficientNet-Lite0, its projection head and
  classifier; the model in training mode (batch-norm statistics update, dropout on).
- Step 4 (P-Tuning v2): encoders, memory projections and decoder frozen, only the deep prompts, the
  report head and the full-report prompt train. Forward + backward + AdamW step of the report loss.
  ``losses.step4_loss`` runs the encoder forward with autograd on, but as no parameter before the
  decoder requires a gradient (checked below) and the images need none, autograd records nothing
  there: it costs what a ``torch.no_grad`` forward costs. The frozen encoder runs in eval mode
  (batch-norm running statistics), as a frozen backbone should.
- Step 4 (decoder FT, the ``demo`` and ``cpu`` presets' ``step4.mode``): the same, with the memory
  projections, prompts, decoder and report head training; DCCLIP stays frozen (checked below).

Weights are random (``pretrained=None``: no download; speed does not depend on the values) and the
text encoder is the tiny random one (neither step uses it). Inputs are random studies of ``--views``
views (IU X-ray: 2, fused by the model) and, for Step 4, random reports of ``--report-length``
tokens (IU X-ray's reports average ~35 words; its max length is 60). Images/s counts every view.
Each figure is the best of ``--repeats`` timings of ``--steps`` steps after ``--warmup`` steps.

Run from the repository root:  .venv/bin/python benchmarks/bench_dcrrg_training.py [--sizes 128 224]
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

from rrg_core.models.dcrrg import DCRRG, DCCLIPConfig, DCRRGConfig, losses  # noqa: E402
from rrg_core.models.dcrrg.dcclip import DCCLIP  # noqa: E402
from rrg_core.observations import NUM_OBSERVATIONS  # noqa: E402

Step = Callable[[], None]


def _clip_config() -> DCCLIPConfig:
    # Default backbone (EfficientNet-Lite0) and heads; random weights, tiny unused text encoder.
    return DCCLIPConfig(pretrained=None, text_encoder="tiny-random")


def step1(batch: int, views: int, size: int, generator: torch.Generator) -> Step:
    """One Step-1 training step of the image side, on fixed random inputs."""
    clip = DCCLIP(_clip_config()).train()
    trainable = [
        *clip.image_encoder.parameters(),
        *clip.image_projection.parameters(),
        *clip.image_classifier.parameters(),
    ]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    images = torch.rand(batch, views, 3, size, size, generator=generator)
    targets = torch.randint(0, 2, (batch, NUM_OBSERVATIONS), generator=generator)
    keep = torch.rand(batch, NUM_OBSERVATIONS, generator=generator) > 0.1  # ~10% uncertain

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses.observation_loss(clip, clip.encode_image(images)[0], "image", targets, keep).backward()
        optimizer.step()

    return run


def step4(
    batch: int, views: int, size: int, generator: torch.Generator, vocab_size: int, length: int, mode: str
) -> Step:
    """One Step-4 step on fixed random inputs: prompt tuning (``mode`` "pt") or decoder FT ("decoder")."""
    model = DCRRG(DCRRGConfig(vocab_size=vocab_size, clip=_clip_config()))
    model.enable_step4(mode)
    frozen = list(model.clip.parameters())
    if mode == "pt":
        frozen += [*model.image_memory.parameters(), *model.decoder.parameters()]
    if any(p.requires_grad for p in frozen):
        raise SystemExit(f"Step 4 ({mode}) left a parameter trainable that must stay frozen")
    model.train()
    model.clip.eval()  # frozen backbone: running batch-norm statistics, no dropout
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    images = torch.rand(batch, views, 3, size, size, generator=generator)
    body = torch.randint(4, vocab_size, (batch, length - 2), generator=generator)
    ids = torch.cat([torch.ones(batch, 1, dtype=torch.long), body, torch.full((batch, 1), 2)], dim=1)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses.step4_loss(model, images, ids).backward()
        optimizer.step()

    return run


def best_seconds_per_step(run: Step, warmup: int, steps: int, repeats: int) -> float:
    """The fastest of ``repeats`` mean step times (seconds), after ``warmup`` untimed steps."""
    for _ in range(warmup):
        run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            run()
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def main(argv: list[str] | None = None) -> int:
    """Time both steps at every size and print images/s and studies/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224], help="input sides in pixels")
    parser.add_argument("--batch", type=int, default=16, help="studies per step (default 16)")
    parser.add_argument("--views", type=int, default=2, help="views per study (default 2, IU X-ray)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="timings per figure, best kept (default 2)")
    parser.add_argument("--vocab-size", type=int, default=1000, help="Step-4 vocabulary (default 1000)")
    parser.add_argument("--report-length", type=int, default=60, help="Step-4 report ids (default 60)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads; batch {args.batch} studies x {args.views} views, "
        f"best of {args.repeats} x {args.steps} steps after {args.warmup} warm-up"
    )
    print(f"{'step':<28} {'size':>5} {'s/step':>8} {'images/s':>9} {'studies/s':>10}")
    for size in args.sizes:
        generator = torch.Generator().manual_seed(size)
        cases = {
            "Step 1 (DCCLIP image side)": step1(args.batch, args.views, size, generator),
            **{
                f"Step 4 ({label})": step4(
                    args.batch, args.views, size, generator, args.vocab_size, args.report_length, mode
                )
                for mode, label in (("pt", "prompt tuning"), ("decoder", "decoder FT"))
            },
        }
        for name, run in cases.items():
            seconds = best_seconds_per_step(run, args.warmup, args.steps, args.repeats)
            studies = args.batch / seconds
            print(f"{name:<28} {size:>5} {seconds:>8.2f} {studies * args.views:>9.1f} {studies:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
