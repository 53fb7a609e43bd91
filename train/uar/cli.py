"""``python -m train dvae`` and ``python -m train uar``: the dVAE alone, or dVAE + UAR stages 1 and 2.

A UAR run folder holds ``dvae/`` (the dVAE checkpoint and its reconstruction PNGs), ``step1/`` and
``step2/`` (the UAR checkpoint after stage 1 and stage 2) and, in RUN_DIR itself, the final UAR
checkpoint (what ``train evaluate`` and the app load; the dVAE encoder is inside it). A rerun skips
finished stages; ``--stages 2`` starts from ``step1/``. Each UAR stage records the hash of the dVAE
it was trained on, and a stage trained on another dVAE is refused rather than mixed in.

Rows of Table 2 without two-stage training (``ablation`` other than ``uar``) train in one stage:
stage 2's folder, with stage 1's epochs added to stage 2's.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from rrg_core.checkpoints import CheckpointError, checkpoint_hash, data_fingerprint, load_checkpoint
from rrg_core.errors import RRGError
from rrg_core.models.uar import UAR
from rrg_core.models.uar.dvae import DVAE
from rrg_core.models.uar.io import load_dvae, load_uar, save_dvae, save_uar
from train.common.distributed import barrier
from train.common.harness import Harness, StageSpec, publish
from train.common.presets import as_dict
from train.common.runner import StepPlan, plan_steps, step_folder
from train.uar import dvae_steps, stages
from train.uar.data import ImageSettings, UARData, prepare
from train.uar.presets import UARPreset, build_preset, dvae_config, parse_stages, uar_config

logger = logging.getLogger(__name__)

DVAE_DIR = "dvae"


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _run_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "run"}


# -- the dVAE -------------------------------------------------------------------------------------


def train_and_save_dvae(
    args: argparse.Namespace, preset: UARPreset, data: UARData, ctx: Harness, folder: Path
) -> DVAE:
    """Train the preset's dVAE on the training views, validate it, save it (rank 0) with its PNGs."""
    settings = preset.dvae
    started = time.perf_counter()
    dvae = DVAE(dvae_config(preset)).to(ctx.device)
    stage, final_temperature = dvae_steps.train_dvae(dvae, data.train_views(), data.image, settings, ctx)
    result = ctx.train("dvae", stage)
    result["final_temperature"] = final_temperature
    dvae.eval()
    val_views = data.val_images.flatten(0, 1)
    keep = settings.reconstructions
    metrics, originals, reconstructions = dvae_steps.evaluate_dvae(
        dvae, val_views, data.image, ctx.device, keep
    )
    result.update(metrics, seconds=round(time.perf_counter() - started, 1))
    ctx.log_validation(result)
    if ctx.info.is_main:
        probe = _findings_probe(dvae, data, settings.probe_epochs, ctx, args.seed)
        if probe:
            result["findings_probe"] = probe
        training = {"preset": preset.name, "seed": args.seed, "args": _run_args(args),
                    "settings": as_dict(preset)}  # fmt: skip
        publish(lambda target: save_dvae(
            dvae, target, preprocess=data.image.preprocess(None), extra_config={"training": training},
            metrics={"training": result}, preset=preset.name, data_fingerprint=data_fingerprint(args.data),
        ), folder)  # fmt: skip
        if len(originals):
            dvae_steps.save_reconstructions(folder, originals, reconstructions)
        _print_dvae(metrics, dvae.config.codebook_size, result["seconds"], probe.get("val_findings_auroc"))
    barrier(ctx.info)
    return dvae


def _findings_probe(dvae: DVAE, data: UARData, epochs: int, ctx: Harness, seed: int) -> dict[str, Any]:
    """The token probe's result with its time, or {} when it is off (0 epochs)."""
    if epochs <= 0:
        return {}
    started = time.perf_counter()
    probe = dvae_steps.probe_findings(dvae, data, epochs, ctx.device, seed)
    return {**probe, "seconds": round(time.perf_counter() - started, 1)} if probe else {}


def _print_dvae(metrics: dict[str, Any], codebook: int, seconds: float, probe_auroc: float | None) -> None:
    if not metrics:
        print(f"dvae: trained in {seconds:.0f}s (no val split: no reconstruction error or perplexity)")
        return
    print(
        f"dvae: val reconstruction MSE {metrics['val_reconstruction_mse']:.4f}, code perplexity "
        f"{metrics['val_perplexity']:.1f} of {codebook} ({metrics['val_codes_used']} codes used), "
        f"{seconds:.0f}s"
    )
    if probe_auroc is not None:
        print(f"dvae: findings kept in the tokens, probe val mean AUROC {probe_auroc:.3f}")


def run_dvae(args: argparse.Namespace) -> int:
    """``python -m train dvae``: RUN_DIR becomes a dvae checkpoint (with reconstructions/)."""
    preset = build_preset(args.preset, args.set)

    with Harness(args, "dvae", preset.weight_decay) as harness:
        if _complete(args.out):
            load_dvae(args.out)  # a finished dVAE must also be a readable one
            logger.info("%s already holds a trained dVAE; delete it to train again", args.out)
            return 0
        harness.seed()
        image = ImageSettings.of_preset(preset)
        data = prepare(args.data, image, None, args.workers, harness.info.is_main, args.extra)
        train_and_save_dvae(args, preset, data, harness, args.out)
    return 0


# -- UAR --------------------------------------------------------------------------------------------


def _stage_plan(preset: UARPreset, requested: list[int], one_stage: bool) -> tuple[UARPreset, list[int]]:
    """The preset and stages to train: a one-stage row trains stage 2 only, with stage 1's epochs added."""
    if not one_stage or 1 not in requested:
        return preset, requested
    logger.info("ablation %r trains in one stage: stage 1's epochs go to stage 2", preset.ablation)
    stage2 = dataclasses.replace(preset.stage2, epochs=preset.stage1.epochs + preset.stage2.epochs)
    return dataclasses.replace(preset, stage2=stage2), [2]


def _tokenizer(
    args: argparse.Namespace, preset: UARPreset, data: UARData, ctx: Harness, train: bool
) -> tuple[DVAE, str]:
    """The dVAE (trained now, or read from RUN_DIR/dvae or --dvae) and its checkpoint hash."""
    folder = args.out / DVAE_DIR
    if train and not _complete(folder):
        train_and_save_dvae(args, preset, data, ctx, folder)
    elif train:
        logger.info("dvae: %s is complete, skipped", folder)
    if not _complete(folder) and args.dvae is not None:
        folder = args.dvae
    if not _complete(folder):
        raise RRGError(f"no trained dVAE in {folder}: run with --stages dvae,... first, or give --dvae DIR")
    dvae, checkpoint = load_dvae(folder, ctx.device)
    ctx.resume_from({"dvae": checkpoint.metrics.get("training", {})})  # curves go on after the dVAE's
    if dvae.config.in_channels != data.image.channels:
        raise CheckpointError(
            f"the dVAE in {folder} reads {dvae.config.in_channels}-channel images but the preset gives "
            f"{data.image.channels}"
        )
    return dvae, checkpoint_hash(folder)


def _save_kwargs(
    args: argparse.Namespace, preset: UARPreset, data: UARData, done: list[int], metrics: dict, dvae_hash: str
) -> dict:
    training = {"preset": preset.name, "stages_done": done, "seed": args.seed, "args": _run_args(args),
                "settings": as_dict(preset)}  # fmt: skip
    return dict(
        vocab=data.vocab, metrics=metrics, preset=preset.name,
        data_fingerprint=data_fingerprint(args.data),
        preprocess=data.image.preprocess(data.spec.views),
        extra_config={"dvae_sha256": dvae_hash, "training": training},
    )  # fmt: skip


def _resume(run_dir: Path, start: Path, ctx: Harness, dvae_hash: str) -> tuple[UAR, dict, list[int]]:
    """The model, metrics and stages done of a finished stage's checkpoint, trained on this dVAE."""
    model, checkpoint = load_uar(start, ctx.device)
    if dvae_hash and checkpoint.config.get("dvae_sha256") not in (None, dvae_hash):
        raise CheckpointError(
            f"{start} was trained on another dVAE than {run_dir / DVAE_DIR}; delete the stage folders "
            "to train them again on this one"
        )
    done = list(checkpoint.config.get("training", {}).get("stages_done", []))
    logger.info("starting from %s (stages done: %s)", start, done)
    return model, dict(checkpoint.metrics), done


def _visual_input(model: UAR, data: UARData, ctx: Harness) -> stages.VisualInput:
    """Token ids computed once (no random crop) or None (images tokenized per batch)."""
    if data.image.random_crop or model.tokenizer is None:
        return stages.VisualInput(None, None)
    started = time.perf_counter()
    train = dvae_steps.tokenize(model.tokenizer, data.train_images, data.image, ctx.device)
    val = dvae_steps.tokenize(model.tokenizer, data.val_images, data.image, ctx.device)
    if ctx.info.is_main:
        seconds = time.perf_counter() - started
        logger.info("dVAE tokens of %d studies computed once (%.1fs)", len(train) + len(val), seconds)
    return stages.VisualInput(train, val)


def _plan(
    args: argparse.Namespace, preset: UARPreset, requested: list[str]
) -> tuple[UARPreset, StepPlan | None, bool]:
    """The preset as trained, the UAR stages' plan (None when no stage is asked for) and whether the
    row uses the dVAE."""
    probe = uar_config(
        preset, vocab_size=10, max_length=2, views=1, dvae=dvae_config(preset), special=(0, 1, 2)
    )
    preset, wanted = _stage_plan(preset, [int(s) for s in requested if s != "dvae"], probe.first_stage() == 2)
    plan = plan_steps(args.out, wanted) if wanted else None
    for k in plan.skipped if plan else ():
        logger.info("stage %d: %s is complete, skipped", k, step_folder(args.out, k))
    return preset, plan, probe.use_lsu


def _log_stage(k: int, result: dict[str, Any], example: str) -> None:
    logger.info(
        "stage %d: loss %.4f (CE %.4f), val CE %s, val alignment score %s, val findings "
        "AUROC %s", k, result["final_loss"], result.get("ce", float("nan")),
        result.get("val_ce"), result.get("val_alignment_score"), result.get("val_findings_auroc", "-"),
    )  # fmt: skip
    logger.info("stage %d example (first val study): %s", k, example)


def _train_stages(
    args: argparse.Namespace, preset: UARPreset, ctx: Harness, data: UARData, plan: StepPlan,
    dvae: DVAE | None, dvae_hash: str,
) -> None:  # fmt: skip
    run_dir = args.out
    if plan.start_from is not None:
        model, metrics, done = _resume(run_dir, plan.start_from, ctx, dvae_hash)
    else:
        config = uar_config(preset, vocab_size=len(data.vocab), max_length=data.spec.max_length,
                            views=data.spec.views, dvae=dvae.config if dvae else dvae_config(preset),
                            special=(data.vocab.pad_id, data.vocab.bos_id, data.vocab.eos_id))  # fmt: skip
        model, metrics, done = UAR(config, dvae.encoder if dvae is not None else None), {}, []
    model.to(ctx.device)
    visual = _visual_input(model, data, ctx)

    def finish(k: int) -> Any:
        def validated(result: dict[str, Any]) -> dict[str, Any]:
            extra = {
                "lambdas": list(model.loss_weights()),
                **stages.validate(model, data, visual, ctx.device),
            }
            if ctx.info.is_main:
                example = stages.example_report(model, data, visual, ctx.device, preset.beam_size)
                _log_stage(k, {**result, **extra}, example)
            return extra

        return validated

    def save(folder: Path, done: list[int], metrics: dict[str, Any]) -> None:
        save_uar(model, folder, **_save_kwargs(args, preset, data, done, metrics, dvae_hash))

    def build(k: int) -> Any:
        return stages.train_stage(model, k, data, visual, preset.stage(k), ctx)

    specs = [StageSpec(k, f"stage{k}", lambda k=k: build(k), finish(k)) for k in plan.todo]
    ctx.run_stages(model, specs, metrics, done, save)


def _train_uar(args: argparse.Namespace, preset: UARPreset, ctx: Harness, requested: list[str]) -> None:
    preset, plan, use_lsu = _plan(args, preset, requested)
    stages_left = plan is not None and (plan.todo or not (args.out / "config.json").is_file())
    dvae_left = "dvae" in requested and use_lsu and not _complete(args.out / DVAE_DIR)
    if not stages_left and not dvae_left:
        logger.info("nothing to do: every requested stage is complete in %s", args.out)
        return
    ctx.seed()
    info = ctx.info
    vocab = None  # resuming keeps the vocabulary the finished stages were trained with
    if plan is not None and plan.start_from is not None:
        vocab = load_checkpoint(plan.start_from, expected_kind="uar").vocab
    data = prepare(args.data, ImageSettings.of_preset(preset), vocab, args.workers, info.is_main, args.extra)
    dvae, dvae_hash = None, ""
    if not use_lsu and "dvae" in requested:
        logger.info("ablation %r takes CNN features, not dVAE tokens: no dVAE is trained", preset.ablation)
    if use_lsu:
        dvae, dvae_hash = _tokenizer(args, preset, data, ctx, "dvae" in requested)
    if stages_left:
        _train_stages(args, preset, ctx, data, plan, dvae, dvae_hash)


def run_uar(args: argparse.Namespace) -> int:
    """``python -m train uar``; user errors raise RRGError (exit 2 from train.__main__)."""
    requested = parse_stages(args.stages)
    preset = build_preset(args.preset, args.set)
    if args.dvae is not None and not _complete(args.dvae):
        raise RRGError(f"--dvae {args.dvae} is not a dVAE checkpoint folder (no config.json and weights)")
    with Harness(args, "uar", preset.weight_decay) as harness:
        _train_uar(args, preset, harness, requested)
    return 0
