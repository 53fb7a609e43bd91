"""``python -m train gpu-check``: one command that measures both models' ``paper`` presets on a GPU.

It renders IU-Phantom (the real IU X-ray reports with synthetic images; phantoms when no reports are
given), trains DCRRG's and UAR's ``paper`` presets for a fixed number of iterations per step or
stage (mixed precision is on by itself on CUDA), and prints images/s per step or stage, the peak GPU
memory of each model, and a short test-split evaluation. The default sizes finish in minutes on one
H100; a CPU run with tiny ``--set`` overrides exercises the same path in the tests.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from rrg_core.errors import RRGError

DEFAULT_REPORTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray" / "annotation.json"
#: Each model's steps or stages, and the preset section that sets their batch size.
STAGES = {"dcrrg": ("step1", "step2", "step3", "step4"), "uar": ("dvae", "stage1", "stage2")}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command."""
    p = subparsers.add_parser(
        "gpu-check",
        help="train both paper presets for a few iterations and print images/s, peak memory, scores",
        description=__doc__,
    )
    p.add_argument("--out", required=True, type=Path, help="folder for the data, the runs and the report")
    p.add_argument("--reports", type=Path, default=DEFAULT_REPORTS, help="IU X-ray annotation.json")
    p.add_argument("--phantoms", type=int, default=0, help="N phantom studies, not IU-Phantom")
    p.add_argument("--iterations", type=int, default=50, help="steps per step or stage (default 50)")
    p.add_argument("--eval-studies", type=int, default=100, help="test studies scored per model")
    p.add_argument("--device", help="cuda (default when there is one) or cpu")
    p.add_argument("--workers", type=int, default=8, help="image decoding processes (default 8)")
    for model in STAGES:
        p.add_argument(
            f"--set-{model}", action="append", default=[], metavar="KEY=VALUE",
            help=f"an extra {model} preset override (tests shrink the model with these)",
        )  # fmt: skip
    return p


def run(args: argparse.Namespace) -> int:
    """Data, both trainings, both evaluations; the table on stdout and ``OUT/gpu_check.json``."""
    from train.__main__ import main  # here: the command registry imports this module

    if args.iterations < 1 or args.eval_studies < 1:
        raise RRGError("--iterations and --eval-studies must be at least 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.out.mkdir(parents=True, exist_ok=True)
    data = _render(args, main)
    report: dict[str, Any] = {"device": _device_name(device), "iterations": args.iterations, "models": {}}
    for model, stages in STAGES.items():
        report["models"][model] = _train_and_score(args, model, stages, data, device, main)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(format_report(report))
    return 0


def _render(args: argparse.Namespace, main: Any) -> Path:
    data = args.out / "data"
    if (data / "annotation.json").is_file():
        return data
    if args.phantoms:
        command = ["phantoms", "--out", str(data), "--n", str(args.phantoms), "--size", "128"]
    elif args.reports.is_file():
        command = ["phantoms", "--from-reports", str(args.reports), "--out", str(data)]
    else:
        raise RRGError(f"no IU X-ray reports at {args.reports}: give --reports PATH or --phantoms N")
    _check(main([*command, "--workers", str(args.workers)]), "rendering the data")
    return data


def _train_and_score(
    args: argparse.Namespace, model: str, stages: tuple[str, ...], data: Path, device: torch.device, main: Any
) -> dict[str, Any]:
    run = args.out / model
    limits = [a for stage in stages for a in ("--set", f"{stage}.max_iterations={args.iterations}")]
    if model == "dcrrg":
        # The paper's ResNet-50 ImageNet weights would be downloaded; no machine here reaches the
        # network, so DCRRG runs on the packaged EfficientNet-Lite0 ImageNet weights.
        limits += ["--set", "model.image_encoder=efficientnet_lite0"]
    extra = [a for item in getattr(args, f"set_{model}") for a in ("--set", item)]
    command = [model, "--preset", "paper", "--data", str(data), "--out", str(run), "--device", str(device),
               "--workers", str(args.workers), *limits, *extra]  # fmt: skip
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    _check(main(command), f"training {model}")
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    scores = args.out / f"{model}_eval"
    _check(
        main(["evaluate", "--checkpoint", str(run), "--data", str(data), "--split", "test",
              "--limit", str(args.eval_studies), "--no-baselines", "--out", str(scores),
              "--metrics", "BLEU_4", "ROUGE_L", "CIDEr", "--device", str(device), "--workers", "0"]),
        f"evaluating {model}",
    )  # fmt: skip
    return {
        "training_seconds": round(seconds, 1),
        "peak_gpu_memory_gib": None if peak is None else round(peak, 2),
        "images_per_second": throughput(run, stages),
        "test": _scores(scores),
    }


def throughput(run: Path, stages: tuple[str, ...]) -> dict[str, float | None]:
    """Images/s of each step or stage, from what the run recorded: iterations x images per batch /
    seconds (a study's views all count; the dVAE takes single views)."""
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))["config"]
    settings = config["training"]["settings"]
    metrics = _read(run / "metrics.json")
    views = (config.get("preprocess") or {}).get("views") or 2
    rates: dict[str, float | None] = {}
    for stage in stages:
        # UAR's tokenizer is its own checkpoint inside the run folder; its figures sit under "training".
        if stage == "dvae":  # a feature tokenizer is fit, not trained: it has no throughput
            folder = run / "tokenizer" if (run / "tokenizer").is_dir() else run / "dvae"
            kind = _read(folder / "config.json").get("kind")
            result = _read(folder / "metrics.json").get("training") if kind == "dvae" else None
        else:
            result = metrics.get(stage)
        if not result or not result.get("seconds"):
            rates[stage] = None
            continue
        per_batch = settings[stage]["batch_size"] * (1 if stage == "dvae" else views)
        rates[stage] = round(result["iterations"] * per_batch / result["seconds"], 1)
    return rates


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _scores(folder: Path) -> dict[str, Any]:
    (result,) = json.loads((folder / "metrics.json").read_text(encoding="utf-8")).values()
    return {
        "studies": result["num_studies"],
        **{name: round(value, 4) for name, value in result["nlg"].items()},
        "ce_f1_micro": round(result["clinical_efficacy"]["micro"]["f1"], 4),
        "ce_f1_macro": round(result["clinical_efficacy"]["macro"]["f1"], 4),
    }


def format_report(report: dict[str, Any]) -> str:
    """A Markdown table per model: images/s per step or stage, then memory and scores."""
    lines = [f"gpu-check on {report['device']}, {report['iterations']} iterations per step or stage", ""]
    for model, result in report["models"].items():
        rates = " | ".join(f"{stage} {rate if rate is not None else '-'}" for stage, rate in
                           result["images_per_second"].items())  # fmt: skip
        peak = result["peak_gpu_memory_gib"]
        lines += [
            f"| {model} | images/s: {rates} |",
            f"| | training {result['training_seconds']} s, peak GPU memory "
            f"{'-' if peak is None else f'{peak} GiB'} |",
            f"| | test: {', '.join(f'{k} {v}' for k, v in result['test'].items())} |",
        ]
    return "\n".join(lines)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _check(code: int, what: str) -> None:
    if code != 0:
        raise RRGError(f"gpu-check stopped: {what} failed (exit {code}); its message is above")
