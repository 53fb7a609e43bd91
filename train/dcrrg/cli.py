"""``python -m train dcrrg``: train DCRRG's four steps into a resumable run folder.

RUN_DIR/step<k>/ is the checkpoint after step k; RUN_DIR itself holds the final checkpoint (what the
app and ``train evaluate`` load) plus labels.json, the labeler's cached output. A rerun skips finished
steps; ``--steps 3,4`` starts from RUN_DIR/step2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from rrg_core.checkpoints import data_fingerprint
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import RRGError
from rrg_core.models.dcrrg import DCRRG, DCRRGConfig, default_preprocess, load_dcrrg, save_dcrrg
from train.common import presets as common
from train.common.harness import Harness, StageSpec
from train.common.presets import as_dict
from train.common.runner import plan_steps, step_folder
from train.dcrrg import steps as dcrrg_steps
from train.dcrrg.calibration import calibrate
from train.dcrrg.prepare import Prepared, prepare
from train.dcrrg.presets import STEPS, DCRRGPreset, load_preset, step4_mode

logger = logging.getLogger(__name__)


def parse_steps(text: str) -> list[int]:
    """``"3,4"`` -> [3, 4]; steps must be among 1-4, given once each, in increasing order."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RRGError(f"--steps must be a comma-separated list of 1-4, got {text!r}") from None
    if not steps or any(k not in STEPS for k in steps) or steps != sorted(set(steps)):
        raise RRGError(f"--steps must list steps 1-4 once each in increasing order, got {text!r}")
    return steps


def build_settings(args: argparse.Namespace) -> DCRRGPreset:
    """The preset with --set overrides, command-line model options and --epochs-scale applied."""
    raw = common.apply_overrides(load_preset(args.preset), args.set)
    for key in ("image_encoder", "pretrained", "text_encoder"):
        if getattr(args, key) is not None:
            raw.setdefault("model", {})[key] = getattr(args, key)
    preset = common.build(DCRRGPreset, raw)
    if args.epochs_scale <= 0:
        raise RRGError(f"--epochs-scale must be positive, got {args.epochs_scale}")
    scaled = {
        f"step{k}": dataclasses.replace(preset.step(k), epochs=preset.step(k).epochs * args.epochs_scale)
        for k in STEPS
    }
    if (args.extra_chexpert is None) != (args.extra_root is None):
        raise RRGError("--extra-chexpert and --extra-root go together")
    return dataclasses.replace(preset, **scaled)


def new_model(preset: DCRRGPreset, vocab: Vocabulary, max_length: int) -> DCRRG:
    """A fresh DCRRG sized by the preset's ``model`` section."""
    config = DCRRGConfig(
        vocab_size=len(vocab), clip=preset.clip_config(), max_length=max_length, pad_id=vocab.pad_id,
        bos_id=vocab.bos_id, eos_id=vocab.eos_id, **preset.decoder_fields(),
    )  # fmt: skip
    return DCRRG(config)


def _save_kwargs(
    args: argparse.Namespace, preset: DCRRGPreset, prepared: Prepared, done: list[int], metrics: dict,
    model: DCRRG,
) -> dict:  # fmt: skip
    run_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("run",)}
    training = {
        "preset": preset.name,
        "steps_done": done,
        "seed": args.seed,
        "args": run_args,
        "settings": as_dict(preset),
    }
    return dict(
        vocab=prepared.vocab, preprocess=default_preprocess(model.config, preset.image_size),
        extra_config={"training": training},
        metrics=metrics, preset=preset.name,
        data_fingerprint=data_fingerprint(args.data),
    )  # fmt: skip


def stage_specs(
    model: DCRRG, prepared: Prepared, preset: DCRRGPreset, harness: Harness, todo: tuple[int, ...], step4: str
) -> list[StageSpec]:
    """DCRRG's steps still to do, as the harness runs them."""
    data = prepared.train

    def spec(k: int) -> StageSpec:
        settings = preset.step(k)
        if k == 4:
            mode = step4_mode(preset, step4)
            summary: dict[str, Any] = {}

            def build4() -> Any:
                stage, what = dcrrg_steps.step4(model, data, settings, harness, mode)
                summary.update(what)
                print(f"step4 ({mode}): {what['trainable']:,} of {what['total']:,} parameters train "
                      f"({100 * what['trainable_share']:.2f}%)")  # fmt: skip
                return stage

            return StageSpec(4, "step4", build4, lambda _: summary)
        build = getattr(dcrrg_steps, f"step{k}")
        # Thresholds after the last encoder step of this run (Step 2 moves the encoder under the heads)
        last = k == max((j for j in todo if j in (1, 2)), default=None)
        finish = (lambda _: _calibrate(model, prepared, preset, harness, k, last)) if k in (1, 2) else None
        return StageSpec(k, f"step{k}", lambda: build(model, data, settings, harness), finish)

    return [spec(k) for k in todo]


def _calibrate(
    model: DCRRG, prepared: Prepared, preset: DCRRGPreset, harness: Harness, step: int, thresholds: bool
) -> dict[str, Any]:
    """The val AUROC after Step 1 or 2 and, after the run's last encoder step (``thresholds``), the
    thresholds by the preset's rule (nothing without a val split)."""
    if not len(prepared.val_images):
        return {}
    settings = preset.thresholds
    train = (prepared.train.images, prepared.train_targets) if settings.studies == "train+val" else None
    if not thresholds:  # the val split only, and the thresholds it gives are replaced later
        settings, train = dataclasses.replace(settings, rule="observation"), None
    result = calibrate(
        model, (prepared.val_images, prepared.val_targets), prepared.train.transform, harness.device,
        settings.rule, train,
    )  # fmt: skip
    logger.info("step%d: val mean AUROC %s; thresholds: %s", step, result["val_auroc_mean"],
                result["threshold_rule"])  # fmt: skip
    return result


def _train(args: argparse.Namespace, preset: DCRRGPreset, harness: Harness, requested: list[int]) -> None:
    run_dir: Path = args.out
    plan = plan_steps(run_dir, requested)
    for k in plan.skipped:
        logger.info("step %d: %s is complete, skipped", k, step_folder(run_dir, k))
    if not plan.todo and (run_dir / "config.json").is_file():
        logger.info("nothing to do: every requested step is complete in %s", run_dir)
        return
    harness.seed()
    model, vocab, metrics, done = None, None, {}, []
    if plan.start_from is not None:
        model, checkpoint = load_dcrrg(plan.start_from, harness.device)
        vocab, metrics = checkpoint.vocab, dict(checkpoint.metrics)
        done = list(checkpoint.config.get("training", {}).get("steps_done", []))
        logger.info("starting from %s (steps done: %s)", plan.start_from, done)
    prepared = prepare(args, preset, run_dir, vocab, harness.info)
    if model is None:
        model = new_model(preset, prepared.vocab, prepared.spec.max_length)
    model.to(harness.device)

    def save(folder: Path, done: list[int], metrics: dict[str, Any]) -> None:
        save_dcrrg(model, folder, **_save_kwargs(args, preset, prepared, done, metrics, model))

    specs = stage_specs(model, prepared, preset, harness, plan.todo, args.step4)
    harness.run_stages(model, specs, metrics, done, save)


def run(args: argparse.Namespace) -> int:
    """Train; user errors raise RRGError (exit 2 from train.__main__)."""
    requested = parse_steps(args.steps)
    preset = build_settings(args)
    with Harness(args, "dcrrg", preset.weight_decay) as harness:
        _train(args, preset, harness, requested)
    return 0
