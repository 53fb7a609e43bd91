"""``python -m train dvae`` and ``python -m train uar``: the dVAE alone, or LSU's tokenizer + UAR's stages.

A UAR run folder holds ``tokenizer/`` (the preset's LSU tokenizer: a trained dVAE with its
reconstruction PNGs, or the feature tokenizer with its fitted codebook), ``step1/`` and ``step2/``
(the UAR checkpoint after stage 1 and stage 2) and, in RUN_DIR itself, the final UAR checkpoint
(what ``train evaluate`` and the app load; the tokenizer is inside it). A rerun skips finished
stages; ``--stages 2`` starts from ``step1/``. Each UAR stage records the hash of the tokenizer it
was trained on, and a stage trained on another tokenizer is refused rather than mixed in. Run
folders written before the feature tokenizer existed hold their dVAE in ``dvae/``; it is still read.

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
from rrg_core.models.uar.feature_tokenizer import FeatureTokenizer
from rrg_core.models.uar.io import (
    DVAE_KIND,
    load_dvae,
    load_lsu_tokenizer,
    load_uar,
    save_tokenizer,
    save_uar,
)
from train.common.distributed import barrier
from train.common.harness import Harness, StageSpec, publish
from train.common.presets import as_dict
from train.common.runner import StepPlan, plan_steps, step_folder
from train.uar import dvae_steps, stages, tokenizers
from train.uar.data import ImageSettings, UARData, prepare
from train.uar.presets import (
    UARPreset,
    build_preset,
    dvae_config,
    feature_tokenizer_config,
    parse_stages,
    tokenizer_config,
    uar_config,
)

logger = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
LEGACY_DVAE_DIR = "dvae"


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
        probe = _probe_and_publish(args, preset, data, ctx, dvae, settings.probe_epochs, result, folder)
        if len(originals):
            dvae_steps.save_reconstructions(folder, originals, reconstructions)
        _print_dvae(metrics, dvae.config.codebook_size, result["seconds"], probe.get("val_findings_auroc"))
    barrier(ctx.info)
    return dvae


def _probe_and_publish(
    args: argparse.Namespace, preset: UARPreset, data: UARData, ctx: Harness,
    tokenizer: DVAE | FeatureTokenizer, probe_epochs: int, result: dict[str, Any], folder: Path,
) -> dict[str, Any]:  # fmt: skip
    """Rank 0: the token probe's result (added to ``result``, {} when off), then the tokenizer saved
    into ``folder`` with how it was made."""
    probe = tokenizers.probe_findings(tokenizer, data, probe_epochs, ctx.device, args.seed)
    if probe:
        result["findings_probe"] = probe
    training = {"preset": preset.name, "seed": args.seed, "args": _run_args(args),
                "settings": as_dict(preset)}  # fmt: skip
    publish(lambda target: save_tokenizer(
        tokenizer, target, preprocess=data.image.preprocess(None), extra_config={"training": training},
        metrics={"training": result}, preset=preset.name, data_fingerprint=data_fingerprint(args.data),
    ), folder)  # fmt: skip
    return probe


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


def fit_and_save_features(
    args: argparse.Namespace, preset: UARPreset, data: UARData, ctx: Harness, folder: Path
) -> None:
    """Fit the feature tokenizer's codebook on the training views and save it (rank 0; the others wait)."""
    if ctx.info.is_main:
        settings = preset.features
        tokenizer, result, data.train_tokens = tokenizers.fit_feature_tokenizer(
            feature_tokenizer_config(preset), data, ctx.device, settings, args.seed
        )
        _probe_and_publish(args, preset, data, ctx, tokenizer, settings.probe_epochs, result, folder)
        _print_features(result, tokenizer)
    barrier(ctx.info)


def _print_features(result: dict[str, Any], tokenizer: FeatureTokenizer) -> None:
    config = tokenizer.config
    print(
        f"feature tokenizer: {int(result['codes_used'])} of {config.codebook_size} codes used over "
        f"{int(result['vectors'])} cell vectors ({config.encoder} before block {config.block}, "
        f"{config.grid_size}x{config.grid_size} grid), fit in {result['seconds']:.0f}s"
    )
    tuned = result.get("finetune")
    if tuned:
        auroc = tuned.get("val_findings_auroc")
        print(
            f"feature tokenizer: encoder fine-tuned {tuned['epochs']} epochs from block "
            f"{tuned['from_block']} on the training findings in {tuned['seconds']:.0f}s"
            + ("" if auroc is None else f", its head's val mean AUROC {auroc:.3f}")
        )
    probe = result.get("findings_probe", {}).get("val_findings_auroc")
    if probe is not None:
        print(f"feature tokenizer: findings kept in the tokens, probe val mean AUROC {probe:.3f}")


def tokenizer_folder(run_dir: Path) -> Path:
    """RUN_DIR/tokenizer, or RUN_DIR/dvae of a run folder written before it (when that one is complete)."""
    legacy = run_dir / LEGACY_DVAE_DIR
    current = run_dir / TOKENIZER_DIR
    return legacy if _complete(legacy) and not _complete(current) else current


def _tokenizer(
    args: argparse.Namespace, preset: UARPreset, data: UARData, ctx: Harness, make: bool
) -> tuple[DVAE | FeatureTokenizer, str]:
    """The preset's LSU tokenizer (made now, or read from RUN_DIR/tokenizer or --tokenizer) and its
    checkpoint hash; a tokenizer of another kind than the preset's is refused."""
    folder = tokenizer_folder(args.out)
    if make and not _complete(folder):
        if preset.tokenizer == "features":
            fit_and_save_features(args, preset, data, ctx, folder)
        else:
            train_and_save_dvae(args, preset, data, ctx, folder)
    elif make:
        logger.info("tokenizer: %s is complete, skipped", folder)
    if not _complete(folder) and args.tokenizer is not None:
        folder = args.tokenizer
    if not _complete(folder):
        raise RRGError(
            f"no LSU tokenizer in {folder}: run with --stages tokenizer,... first, or give --tokenizer DIR"
        )
    tokenizer, checkpoint = load_lsu_tokenizer(folder, ctx.device)
    kind = "dvae" if checkpoint.kind == DVAE_KIND else "features"
    if kind != preset.tokenizer:
        raise CheckpointError(
            f"{folder} holds a {kind!r} tokenizer but the preset asks for {preset.tokenizer!r}"
        )
    if kind == "dvae":
        ctx.resume_from({"dvae": checkpoint.metrics.get("training", {})})  # curves go on after the dVAE's
    if tokenizer.config.in_channels != data.image.channels:
        raise CheckpointError(
            f"the tokenizer in {folder} reads {tokenizer.config.in_channels}-channel images but the preset "
            f"gives {data.image.channels}"
        )
    return tokenizer, checkpoint_hash(folder)


def _save_kwargs(
    args: argparse.Namespace,
    preset: UARPreset,
    data: UARData,
    done: list[int],
    metrics: dict,
    tokenizer_hash: str,
) -> dict:
    training = {"preset": preset.name, "stages_done": done, "seed": args.seed, "args": _run_args(args),
                "settings": as_dict(preset)}  # fmt: skip
    return dict(
        vocab=data.vocab, metrics=metrics, preset=preset.name,
        data_fingerprint=data_fingerprint(args.data),
        preprocess=data.image.preprocess(data.spec.views),
        extra_config={"tokenizer_sha256": tokenizer_hash, "training": training},
    )  # fmt: skip


def _resume(run_dir: Path, start: Path, ctx: Harness, tokenizer_hash: str) -> tuple[UAR, dict, list[int]]:
    """The model, metrics and stages done of a finished stage's checkpoint, trained on this tokenizer."""
    model, checkpoint = load_uar(start, ctx.device)
    trained_on = checkpoint.config.get("tokenizer_sha256", checkpoint.config.get("dvae_sha256"))  # older runs
    if tokenizer_hash and trained_on not in (None, tokenizer_hash):
        raise CheckpointError(
            f"{start} was trained on another tokenizer than {tokenizer_folder(run_dir)}; delete the stage "
            "folders to train them again on this one"
        )
    done = list(checkpoint.config.get("training", {}).get("stages_done", []))
    logger.info("starting from %s (stages done: %s)", start, done)
    return model, dict(checkpoint.metrics), done


def _visual_input(model: UAR, data: UARData, ctx: Harness) -> stages.VisualInput:
    """Token ids computed once (no random crop) or None (images tokenized per batch)."""
    if data.image.random_crop or model.tokenizer is None:
        return stages.VisualInput(None, None)
    started = time.perf_counter()
    train = data.train_tokens  # made by this run's codebook fit, when it fit one
    if train is None:
        train = tokenizers.tokenize(model.tokenizer, data.train_images, data.image, ctx.device)
    val = tokenizers.tokenize(model.tokenizer, data.val_images, data.image, ctx.device)
    if ctx.info.is_main:
        seconds = time.perf_counter() - started
        logger.info("LSU tokens of %d studies computed once (%.1fs)", len(train) + len(val), seconds)
    return stages.VisualInput(train, val)


def _plan(
    args: argparse.Namespace, preset: UARPreset, requested: list[str]
) -> tuple[UARPreset, StepPlan | None, bool]:
    """The preset as trained, the UAR stages' plan (None when no stage is asked for) and whether the
    row uses the dVAE."""
    probe = uar_config(
        preset, vocab_size=10, max_length=2, views=1, tokenizer=tokenizer_config(preset), special=(0, 1, 2)
    )
    preset, wanted = _stage_plan(
        preset, [int(s) for s in requested if s != "tokenizer"], probe.first_stage() == 2
    )
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
    tokenizer: DVAE | FeatureTokenizer | None, tokenizer_hash: str,
) -> None:  # fmt: skip
    run_dir = args.out
    if plan.start_from is not None:
        model, metrics, done = _resume(run_dir, plan.start_from, ctx, tokenizer_hash)
    else:
        config = uar_config(preset, vocab_size=len(data.vocab), max_length=data.spec.max_length,
                            views=data.spec.views,
                            tokenizer=tokenizer.config if tokenizer is not None else tokenizer_config(preset),
                            special=(data.vocab.pad_id, data.vocab.bos_id, data.vocab.eos_id))  # fmt: skip
        attached = None if tokenizer is None else tokenizers.encoder_of(tokenizer)
        model, metrics, done = UAR(config, attached), {}, []
        if tokenizer is not None and config.visual_init == "codebook":
            model.init_visual_embedding(tokenizers.code_vectors(tokenizer), seed=args.seed)
    model.to(ctx.device)
    visual = _visual_input(model, data, ctx)

    last = max(plan.todo, default=None)

    def finish(k: int) -> Any:
        def validated(result: dict[str, Any]) -> dict[str, Any]:
            # The label context's thresholds are chosen once, after the run's last stage.
            calibrated = {}
            if k == last:
                calibrated = stages.calibrate(model, data, visual, ctx.device, preset.thresholds)
            extra = {
                "lambdas": list(model.loss_weights()),
                **stages.validate(model, data, visual, ctx.device),
                **calibrated,
            }
            if ctx.info.is_main:
                example = stages.example_report(model, data, visual, ctx.device, preset.beam_size)
                _log_stage(k, {**result, **extra}, example)
            return extra

        return validated

    def save(folder: Path, done: list[int], metrics: dict[str, Any]) -> None:
        save_uar(model, folder, **_save_kwargs(args, preset, data, done, metrics, tokenizer_hash))

    def build(k: int) -> Any:
        return stages.train_stage(model, k, data, visual, preset.stage(k), ctx)

    specs = [StageSpec(k, f"stage{k}", lambda k=k: build(k), finish(k)) for k in plan.todo]
    ctx.run_stages(model, specs, metrics, done, save)


def _train_uar(args: argparse.Namespace, preset: UARPreset, ctx: Harness, requested: list[str]) -> None:
    preset, plan, use_lsu = _plan(args, preset, requested)
    stages_left = plan is not None and (plan.todo or not (args.out / "config.json").is_file())
    tokenizer_left = "tokenizer" in requested and use_lsu and not _complete(tokenizer_folder(args.out))
    if not stages_left and not tokenizer_left:
        logger.info("nothing to do: every requested stage is complete in %s", args.out)
        return
    ctx.seed()
    info = ctx.info
    vocab = None  # resuming keeps the vocabulary the finished stages were trained with
    if plan is not None and plan.start_from is not None:
        vocab = load_checkpoint(plan.start_from, expected_kind="uar").vocab
    data = prepare(args.data, ImageSettings.of_preset(preset), vocab, args.workers, info.is_main, args.extra)
    tokenizer, tokenizer_hash = None, ""
    if not use_lsu and "tokenizer" in requested:
        logger.info("ablation %r takes CNN features, not LSU tokens: no tokenizer is made", preset.ablation)
    if use_lsu:
        tokenizer, tokenizer_hash = _tokenizer(args, preset, data, ctx, "tokenizer" in requested)
    if stages_left:
        _train_stages(args, preset, ctx, data, plan, tokenizer, tokenizer_hash)


def run_uar(args: argparse.Namespace) -> int:
    """``python -m train uar``; user errors raise RRGError (exit 2 from train.__main__)."""
    requested = parse_stages(args.stages)
    preset = build_preset(args.preset, args.set)
    if args.tokenizer is not None and not _complete(args.tokenizer):
        raise RRGError(
            f"--tokenizer {args.tokenizer} is not a checkpoint folder (no config.json and weights)"
        )
    with Harness(args, "uar", preset.weight_decay) as harness:
        _train_uar(args, preset, harness, requested)
    return 0
