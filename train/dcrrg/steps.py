"""The four DCRRG training steps (paper sec. 3.1-3.4) over the in-memory training data.

Each step sets which parameters train, draws seeded batches, and runs the shared loop of
:mod:`train.common.runner`; the model's own loss methods do the rest.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rrg_core.data.transforms import TransformConfig
from rrg_core.metrics import auroc_per_observation
from rrg_core.models.dcrrg import DCRRG
from rrg_core.observations import NUM_OBSERVATIONS, OBSERVATIONS
from train.common.distributed import DistInfo, sync_buffers, wrap_ddp
from train.common.runner import LoopSpec, LossModule, index_batches, train_loop
from train.common.runtime import Precision
from train.dcrrg.data import pad_ids, to_model_input

logger = logging.getLogger(__name__)

try:  # the shared implementation, when present
    from rrg_core.metrics.thresholds import choose_thresholds
except ImportError:  # pragma: no cover - fallback for trees without it
    choose_thresholds = None


@dataclass
class TrainData:
    """Everything the steps draw from; per-study lists are in training-record order."""

    images: Tensor  # uint8 (N, V, S, S)
    reports: list[str]
    report_ids: list[list[int]]
    descriptions: list[list[list[int]]]  # N x 14 token id lists
    targets: Tensor  # (N, 14) 0/1
    weights: Tensor  # (N, 14) Step-1 loss weights (0 = uncertain, dropped)
    extra_images: Tensor | None  # image-only Step-1 data (CheXpert-style), uint8 (M, V, S, S)
    extra_targets: Tensor | None
    extra_weights: Tensor | None
    transform: TransformConfig
    pad_id: int


@dataclass
class StepContext:
    """How to run: device, DDP state, precision, batch-order generator and optimiser settings."""

    device: torch.device
    info: DistInfo
    precision: Precision
    generator: torch.Generator
    weight_decay: float


def _iterations(settings: dict[str, Any], examples: int, info: DistInfo) -> tuple[int, int]:
    """(iterations, iterations per epoch) from epochs, batch size, world size and max_iterations."""
    per_epoch = max(1, math.ceil(examples / (settings["batch_size"] * info.world_size)))
    total = max(1, math.ceil(settings["epochs"] * per_epoch))
    if settings.get("max_iterations"):
        total = min(total, settings["max_iterations"])
    return total, per_epoch


def _run(
    model: DCRRG, loss_fn: Any, batches: Iterator[Any], settings: dict, examples: int, ctx: StepContext,
    name: str, images_per_example: int,
) -> dict[str, Any]:  # fmt: skip
    iterations, per_epoch = _iterations(settings, examples, ctx.info)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings["lr"], weight_decay=ctx.weight_decay)
    module = wrap_ddp(LossModule(model, loss_fn), ctx.info)
    if ctx.info.is_main:
        logger.info(
            "%s: %d iterations (%d per epoch), batch %d", name, iterations, per_epoch, settings["batch_size"]
        )
    spec = LoopSpec(name, iterations, per_epoch, settings["batch_size"] * images_per_example)
    losses = train_loop(module, batches, optimizer, ctx.precision, spec, ctx.info)
    sync_buffers(model, ctx.info)
    return {"iterations": iterations, "final_loss": losses[-1], "epoch_losses": losses}


def _images(data: TrainData, cached: Tensor, ctx: StepContext) -> Tensor:
    return to_model_input(cached, data.transform, ctx.device)


def step1(model: DCRRG, data: TrainData, settings: dict, ctx: StepContext) -> dict[str, Any]:
    """Step 1: observation-level CE on images and on report texts, all 14 labels per study, weighted
    by :func:`train.dcrrg.data.balance_weights`; extra image-only data joins the image side."""
    model.requires_grad_(False)
    model.clip.requires_grad_(True)
    model.train()
    images, targets, weights = data.images, data.targets, data.weights
    if data.extra_images is not None:
        images = torch.cat([images, data.extra_images])
        targets, weights = torch.cat([targets, data.extra_targets]), torch.cat([weights, data.extra_weights])
    size = settings["batch_size"]
    image_stream = index_batches(len(images), size, ctx.generator, ctx.info)
    text_stream = index_batches(len(data.reports), size, ctx.generator, ctx.info)

    def batches() -> Iterator[dict[str, Any]]:
        for image_index, text_index in zip(image_stream, text_stream, strict=False):
            yield {
                "images": _images(data, images[image_index], ctx),
                "image_targets": targets[image_index], "image_weights": weights[image_index],
                "texts": [data.reports[i] for i in text_index.tolist()],
                "text_targets": data.targets[text_index], "text_weights": data.weights[text_index],
            }  # fmt: skip

    def loss(m: DCRRG, b: dict[str, Any]) -> Tensor:
        device = ctx.device
        image = m.clip.step1_loss(
            b["images"], None, b["image_targets"].to(device), b["image_weights"].to(device)
        )
        text = m.clip.step1_loss(b["texts"], None, b["text_targets"].to(device), b["text_weights"].to(device))
        return image + text

    return _run(model, loss, batches(), settings, len(images), ctx, "step1", data.images.shape[1])


def step2(model: DCRRG, data: TrainData, settings: dict, ctx: StepContext) -> dict[str, Any]:
    """Step 2: the CSM loss on image-report pairs; both sides carry the report's labels."""
    model.requires_grad_(False)
    model.clip.requires_grad_(True)
    model.train()
    stream = index_batches(len(data.reports), settings["batch_size"], ctx.generator, ctx.info)

    def batches() -> Iterator[dict[str, Any]]:
        for index in stream:
            yield {
                "images": _images(data, data.images[index], ctx),
                "texts": [data.reports[i] for i in index.tolist()],
                "labels": data.targets[index].to(ctx.device),
            }

    def loss(m: DCRRG, b: dict[str, Any]) -> Tensor:
        return m.clip.step2_loss(b["images"], b["texts"], b["labels"], b["labels"])

    return _run(model, loss, batches(), settings, len(data.reports), ctx, "step2", data.images.shape[1])


def step3(model: DCRRG, data: TrainData, settings: dict, ctx: StepContext) -> dict[str, Any]:
    """Step 3: one description per (study, observation), from the images and from the report text
    (the augmented view); DCCLIP frozen and in eval mode (its batch-norm statistics stay put)."""
    model.freeze_encoders()
    model.train()
    model.clip.eval()
    count = len(data.reports) * NUM_OBSERVATIONS
    stream = index_batches(count, settings["batch_size"], ctx.generator, ctx.info)

    def batches() -> Iterator[dict[str, Any]]:
        for index in stream:
            studies, observations = index // NUM_OBSERVATIONS, index % NUM_OBSERVATIONS
            ids = [
                data.descriptions[s][k] for s, k in zip(studies.tolist(), observations.tolist(), strict=True)
            ]
            yield {
                "images": _images(data, data.images[studies], ctx),
                "texts": [data.reports[s] for s in studies.tolist()],
                "observations": observations.to(ctx.device),
                "ids": pad_ids(ids, data.pad_id).to(ctx.device),
            }

    def loss(m: DCRRG, b: dict[str, Any]) -> Tensor:
        return m.step3_loss(b["images"], b["observations"], b["ids"]) + m.step3_loss(
            b["texts"], b["observations"], b["ids"]
        )

    return _run(model, loss, batches(), settings, count, ctx, "step3", data.images.shape[1])


def step4(model: DCRRG, data: TrainData, settings: dict, ctx: StepContext, mode: str) -> dict[str, Any]:
    """Step 4: full reports by prompt tuning (``pt``) or full fine-tuning (``fft``, Table 4)."""
    if mode == "pt":
        trainable, total, share = model.enable_prompt_tuning(reset=True)
    else:
        trainable, total, share = model.enable_full_finetuning()
    if ctx.info.is_main:
        logger.info("step4 (%s): %d of %d parameters train (%.2f%%)", mode, trainable, total, 100 * share)
    model.train()
    if mode == "pt":
        model.clip.eval()
    stream = index_batches(len(data.reports), settings["batch_size"], ctx.generator, ctx.info)

    def batches() -> Iterator[dict[str, Any]]:
        for index in stream:
            ids = [data.report_ids[i] for i in index.tolist()]
            yield {
                "images": _images(data, data.images[index], ctx),
                "ids": pad_ids(ids, data.pad_id).to(ctx.device),
            }

    def loss(m: DCRRG, b: dict[str, Any]) -> Tensor:
        return m.step4_loss(b["images"], b["ids"])

    result = _run(model, loss, batches(), settings, len(data.reports), ctx, "step4", data.images.shape[1])
    return {**result, "mode": mode, "trainable": trainable, "total": total, "trainable_share": share}


@torch.no_grad()
def image_probabilities(
    model: DCRRG, cached: Tensor, transform: TransformConfig, device: torch.device
) -> Tensor:
    """Step-1 probabilities (N, 14) of cached studies, in batches, eval mode."""
    model.eval()
    out = [
        model.clip.observation_probabilities(to_model_input(cached[i : i + 32], transform, device))
        .float()
        .cpu()
        for i in range(0, len(cached), 32)
    ]
    return torch.cat(out) if out else torch.empty(0, NUM_OBSERVATIONS)


def best_f1_thresholds(probabilities: Tensor, targets: Tensor) -> list[float]:
    """Per observation, the threshold maximising F1 on (N, 14) targets (NaN = skip); 0.5 if one class."""
    if choose_thresholds is not None:
        return choose_thresholds(probabilities, targets)
    result = []
    for k in range(targets.shape[1]):
        valid = ~torch.isnan(targets[:, k])
        y, p = targets[valid, k], probabilities[valid, k]
        if y.numel() == 0 or y.min() == y.max():
            result.append(0.5)
            continue
        scores = [
            (2 * ((p >= t) & (y > 0)).sum() / ((p >= t).sum() + (y > 0).sum()), float(t)) for t in p.unique()
        ]
        result.append(max(scores)[1])
    return result


def calibrate(
    model: DCRRG, cached: Tensor, targets: Tensor, transform: TransformConfig, device: torch.device
) -> dict:
    """After Step 1: F1-best thresholds on the validation studies (stored in the model) and their AUROC.

    ``targets`` (N, 14) uses NaN for uncertain labels, which neither choice nor AUROC counts.
    """
    probabilities = image_probabilities(model, cached, transform, device)
    thresholds = best_f1_thresholds(probabilities, targets)
    model.set_thresholds(thresholds)
    summary = auroc_per_observation(targets.numpy(), probabilities.numpy())
    per = {k: (None if math.isnan(v) else round(v, 4)) for k, v in summary.per_observation.items()}
    return {
        "val_auroc": per,
        "val_auroc_mean": None if math.isnan(summary.mean) else round(summary.mean, 4),
        "thresholds": dict(zip(OBSERVATIONS, (round(t, 4) for t in thresholds), strict=True)),
    }
