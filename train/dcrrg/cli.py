"""``python -m train dcrrg``: train DCRRG's four steps into a resumable run folder.

RUN_DIR/step<k>/ is the checkpoint after step k; RUN_DIR itself holds the final checkpoint (what the
app and ``train evaluate`` load) plus labels.json, the labeler's cached output. A rerun skips finished
steps; ``--steps 3,4`` starts from RUN_DIR/step2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rrg_core.checkpoints import data_fingerprint
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import RRGError
from rrg_core.models.dcrrg import DCRRG, DCRRGConfig, default_preprocess, load_dcrrg, save_dcrrg
from rrg_core.models.dcrrg.dcclip import DCCLIPConfig
from train.common.distributed import DistInfo, barrier, cleanup_distributed, setup_distributed
from train.common.runner import plan_steps, step_folder
from train.common.runtime import Precision, apply_thread_policy, choose_device, seed_everything
from train.dcrrg import steps as dcrrg_steps
from train.dcrrg.calibration import calibrate
from train.dcrrg.prepare import Prepared, prepare
from train.dcrrg.presets import STEPS, apply_overrides, load_preset, step4_mode, step_settings

logger = logging.getLogger(__name__)

_CLIP_FIELDS = {f.name for f in dataclasses.fields(DCCLIPConfig)}
_DECODER_FIELDS = {
    "d_model",
    "n_heads",
    "n_layers",
    "d_ff",
    "dropout",
    "n_prefix",
    "prefix_hidden",
    "observation_rows",
}


def parse_steps(text: str) -> list[int]:
    """``"3,4"`` -> [3, 4]; steps must be among 1-4, given once each, in increasing order."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RRGError(f"--steps must be a comma-separated list of 1-4, got {text!r}") from None
    if not steps or any(k not in STEPS for k in steps) or steps != sorted(set(steps)):
        raise RRGError(f"--steps must list steps 1-4 once each in increasing order, got {text!r}")
    return steps


def build_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The preset with --set overrides, command-line model options and --epochs-scale applied."""
    preset = apply_overrides(load_preset(args.preset), args.set)
    model = preset["model"]
    for option, key in (
        ("image_encoder", "image_encoder"),
        ("pretrained", "pretrained"),
        ("text_encoder", "text_encoder"),
    ):
        if getattr(args, option) is not None:
            model[key] = getattr(args, option)
    if args.epochs_scale <= 0:
        raise RRGError(f"--epochs-scale must be positive, got {args.epochs_scale}")
    for k in STEPS:
        preset[f"step{k}"] = step_settings(preset, k)
        preset[f"step{k}"]["epochs"] *= args.epochs_scale
    if (args.extra_chexpert is None) != (args.extra_root is None):
        raise RRGError("--extra-chexpert and --extra-root go together")
    if args.workers < 0:
        raise RRGError(f"--workers must be 0 or more, got {args.workers}")
    return preset


def new_model(preset: dict[str, Any], vocab: Vocabulary, max_length: int) -> DCRRG:
    """A fresh DCRRG sized by the preset's ``model`` section."""
    section = preset["model"]
    unknown = set(section) - _CLIP_FIELDS - _DECODER_FIELDS - {"description_max_length"}
    if unknown:
        raise RRGError(f"unknown model field(s) in the preset: {', '.join(sorted(unknown))}")
    clip = DCCLIPConfig(**{k: v for k, v in section.items() if k in _CLIP_FIELDS})
    decoder = {k: v for k, v in section.items() if k in _DECODER_FIELDS}
    config = DCRRGConfig(
        vocab_size=len(vocab), clip=clip, max_length=max_length, pad_id=vocab.pad_id, bos_id=vocab.bos_id,
        eos_id=vocab.eos_id, **decoder,
    )  # fmt: skip
    return DCRRG(config)


def publish_final(model: DCRRG, run_dir: Path, save_kwargs: dict[str, Any]) -> None:
    """Write the final checkpoint's files into RUN_DIR itself.

    save_dcrrg replaces its target folder as a whole, which would delete the step folders and the
    labels cache; so it saves into a hidden sibling and the files are moved in, config.json last
    (a folder without its config.json is not taken for a checkpoint).
    """
    staging = run_dir / ".final-staging"
    shutil.rmtree(staging, ignore_errors=True)
    save_dcrrg(model, staging, **save_kwargs)
    names = sorted(os.listdir(staging), key=lambda name: name == "config.json")
    for name in names:
        os.replace(staging / name, run_dir / name)
    staging.rmdir()
    logger.info("final checkpoint: %s", run_dir)


def _save_kwargs(
    args: argparse.Namespace, preset: dict, prepared: Prepared, done: list[int], metrics: dict, model: DCRRG
) -> dict:
    run_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("run",)}
    training = {
        "preset": preset["name"],
        "steps_done": done,
        "seed": args.seed,
        "args": run_args,
        "settings": preset,
    }
    return dict(
        vocab=prepared.vocab, preprocess=default_preprocess(model.config, preset["image_size"]),
        extra_config={"training": training},
        metrics=metrics, preset=preset["name"],
        data_fingerprint=data_fingerprint(args.data),
    )  # fmt: skip


def _train(args: argparse.Namespace, preset: dict, info: DistInfo, requested: list[int]) -> None:
    run_dir: Path = args.out
    plan = plan_steps(run_dir, requested)
    for k in plan.skipped:
        logger.info("step %d: %s is complete, skipped", k, step_folder(run_dir, k))
    if not plan.todo and (run_dir / "config.json").is_file():
        logger.info("nothing to do: every requested step is complete in %s", run_dir)
        return
    generator = seed_everything(args.seed + info.rank * 0)  # one seed: every rank draws the same order
    model, vocab, metrics, done = None, None, {}, []
    if plan.start_from is not None:
        model, checkpoint = load_dcrrg(plan.start_from, info.device)
        vocab, metrics = checkpoint.vocab, dict(checkpoint.metrics)
        done = list(checkpoint.config.get("training", {}).get("steps_done", []))
        logger.info("starting from %s (steps done: %s)", plan.start_from, done)
    prepared = prepare(args, preset, run_dir, vocab, info)
    if model is None:
        model = new_model(preset, prepared.vocab, prepared.spec.max_length)
    model.to(info.device)
    context = dcrrg_steps.StepContext(
        info.device, info, Precision(info.device), generator, float(preset["weight_decay"])
    )
    for k in plan.todo:
        metrics[f"step{k}"] = _run_step(k, model, prepared, preset, context, args)
        done = sorted(set(done) | {k})
        if info.is_main:
            kwargs = _save_kwargs(args, preset, prepared, done, metrics, model)
            save_dcrrg(model, step_folder(run_dir, k), **kwargs)
        barrier(info)
    if info.is_main:
        publish_final(model, run_dir, _save_kwargs(args, preset, prepared, done, metrics, model))
    barrier(info)


def _run_step(
    k: int, model: DCRRG, prepared: Prepared, preset: dict, ctx: Any, args: argparse.Namespace
) -> dict:
    started = time.perf_counter()
    settings = preset[f"step{k}"]
    if k == 4:
        mode = step4_mode(preset, args.step4)
        result = dcrrg_steps.step4(model, prepared.train, settings, ctx, mode)
        print(f"step4 ({mode}): {result['trainable']:,} of {result['total']:,} parameters train "
              f"({100 * result['trainable_share']:.2f}%)")  # fmt: skip
    else:
        result = getattr(dcrrg_steps, f"step{k}")(model, prepared.train, settings, ctx)
    if k == 1 and len(prepared.val_images):
        result.update(
            calibrate(model, prepared.val_images, prepared.val_targets, prepared.train.transform, ctx.device)
        )
        logger.info("step1: val mean AUROC %s; thresholds chosen on val", result["val_auroc_mean"])
    result["seconds"] = round(time.perf_counter() - started, 1)
    logger.info("step %d done in %.1fs, final loss %.4f", k, result["seconds"], result["final_loss"])
    return result


def run(args: argparse.Namespace) -> int:
    """Train; user errors raise RRGError (exit 2 from train.__main__)."""
    requested = parse_steps(args.steps)
    preset = build_settings(args)
    if not args.data.is_dir():
        raise RRGError(f"data folder {args.data} not found")
    device = choose_device(args.device)
    info = setup_distributed(device)
    try:
        threads = apply_thread_policy(info.enabled and info.device.type == "cpu")
        logger.info(
            "dcrrg preset %s on %s (%d threads, world size %d)",
            args.preset,
            info.device,
            threads,
            info.world_size,
        )
        if info.is_main:
            args.out.mkdir(parents=True, exist_ok=True)
        barrier(info)
        started = time.perf_counter()
        _train(args, preset, info, requested)
        if info.is_main:
            print(f"dcrrg: {args.out} ready ({time.perf_counter() - started:.0f}s)")
    finally:
        cleanup_distributed()
    return 0
