"""The four DCRRG training steps (paper sec. 3.1-3.4) over the in-memory training data.

Each step sets which parameters train and returns its :class:`~train.common.harness.Stage`: seeded
batches and the loss of :mod:`rrg_core.models.dcrrg.losses`; the harness runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from rrg_core.data.transforms import TransformConfig
from rrg_core.models.dcrrg import DCRRG, EncoderFeatures
from rrg_core.models.dcrrg import losses as dcrrg_losses
from rrg_core.models.dcrrg.losses import DescriptionBatch, Labelled
from rrg_core.models.image_encoders import channels_last
from rrg_core.observations import NUM_OBSERVATIONS
from train.common.data import pad_ids
from train.common.harness import Harness, Stage
from train.common.runner import index_batches
from train.dcrrg.data import to_model_input
from train.dcrrg.frozen_layers import freeze_early_image_layers, freeze_early_text_layers
from train.dcrrg.presets import LoopSettings, Step1Settings, Step2Settings, Step3Settings, Step4Settings

logger = logging.getLogger(__name__)


@dataclass
class TrainData:
    """Everything the steps draw from; per-study lists are in training-record order."""

    images: Tensor  # uint8 (N, V, S, S)
    reports: list[str]
    report_ids: list[list[int]]
    descriptions: list[list[list[int]]]  # N x 14 token id lists
    targets: Tensor  # (N, 14) 0/1
    states: Tensor  # (N, 14) 0/1: the report asserts the observation (positive or uncertain)
    weights: Tensor  # (N, 14) Step-1 loss weights (0 = uncertain, dropped)
    extra_images: Tensor | None  # image-only Step-1 data (CheXpert-style), uint8 (M, V, S, S)
    extra_targets: Tensor | None
    extra_weights: Tensor | None
    transform: TransformConfig
    pad_id: int
    description_weights: Tensor | None = None  # (N, 14) Step-3 pair sampling weights; None: uniform
    # Frozen-encoder outputs per study (see cached_features); Steps 1-2 clear it, as they change them.
    encoded: CachedFeatures | None = None
    # (block, output of the frozen layers before it) of the paired studies, shared by Steps 1 and 2.
    early: tuple[int, Tensor] | None = None


@dataclass
class CachedFeatures:
    """Per-study outputs of the frozen encoders (eval mode), computed once for Steps 3-4."""

    feature_maps: Tensor  # (N, C, h, V*w) image feature maps, views side by side
    image_pooled: Tensor  # (N, C) raw image embeddings v
    token_states: Tensor  # (N, T, H) report token states, padded to one T
    attention_mask: Tensor  # (N, T)
    text_pooled: Tensor  # (N, H) raw text embeddings t

    def images(self, index: Tensor) -> EncoderFeatures:
        return EncoderFeatures.of_images(self.feature_maps[index], self.image_pooled[index])

    def texts(self, index: Tensor) -> EncoderFeatures:
        mask = self.attention_mask[index]
        width = max(1, int(mask.sum(1).max()))  # trim the batch's common padding
        return EncoderFeatures.of_texts(
            self.token_states[index, :width], mask[:, :width], self.text_pooled[index]
        )


def _stage(
    model: DCRRG, loss_fn: Any, batches: Iterator[Any], settings: LoopSettings, examples: int, data: TrainData
) -> Stage:
    return Stage(settings, model, loss_fn, batches, examples, param_groups=_parameter_groups(model, settings),
                 images_per_example=data.images.shape[1])  # fmt: skip


def _parameter_groups(model: DCRRG, settings: LoopSettings) -> list[dict[str, Any]]:
    """Trainable parameters at ``lr``; with ``text_lr`` set, the text encoder's at that rate instead.

    A pretrained language model (the packaged MiniLM) forgets at the rate that suits freshly
    initialised heads and the image encoder's last blocks, so the cpu preset gives it a smaller one.
    """
    text_ids = {id(p) for p in model.clip.text_encoder.parameters()}
    text_lr = getattr(settings, "text_lr", None)
    rest = [p for p in model.parameters() if p.requires_grad and (text_lr is None or id(p) not in text_ids)]
    groups = [{"params": rest, "lr": settings.lr}]
    text = [p for p in model.clip.text_encoder.parameters() if p.requires_grad] if text_lr else []
    if text:
        groups.append({"params": text, "lr": float(text_lr)})
    return groups


def _images(data: TrainData, cached: Tensor, ctx: Harness) -> Tensor:
    return to_model_input(cached, data.transform, ctx.device)


@torch.no_grad()
def cached_features(model: DCRRG, data: TrainData, ctx: Harness, batch: int = 32) -> CachedFeatures:
    """The frozen encoders' image feature maps and report token states of every training study,
    computed once (encoders in eval mode, as Steps 3-4 run them) and kept in ``data.encoded``.

    Steps 3 and 4 (PT) never change the encoders, so each study's decoder memory input is the same on
    every iteration; re-running the image encoder per batch was most of their cost.
    """
    if data.encoded is not None:
        return data.encoded
    was_training = model.clip.training
    model.clip.eval()
    image_parts, text_parts = [], []
    for start in range(0, len(data.reports), batch):
        with torch.no_grad():
            image_parts.append(model.features(_images(data, data.images[start : start + batch], ctx)))
            text_parts.append(model.features(data.reports[start : start + batch]))
    model.clip.train(was_training)
    width = max(t.states.shape[1] for t in text_parts)
    data.encoded = CachedFeatures(
        feature_maps=torch.cat([f.states.float() for f in image_parts]),
        image_pooled=torch.cat([f.pooled.float() for f in image_parts]),
        token_states=torch.cat([functional_pad(t.states.float(), width, dim=1) for t in text_parts]),
        attention_mask=torch.cat([functional_pad(t.attention_mask, width, dim=1) for t in text_parts]),
        text_pooled=torch.cat([t.pooled.float() for t in text_parts]),
    )
    return data.encoded


def functional_pad(tensor: Tensor, width: int, dim: int) -> Tensor:
    """Zero-pad ``tensor`` along ``dim`` to ``width``."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


def paired_early_features(model: DCRRG, data: TrainData, train_from_block: int, ctx: Harness) -> Tensor:
    """:func:`early_image_features` of the paired studies, computed once per block: the layers before
    it stay frozen in every step that names the same block, so Step 2 reuses Step 1's output."""
    if data.early is None or data.early[0] != train_from_block:
        data.early = (train_from_block, early_image_features(model, data, data.images, train_from_block, ctx))
    return data.early[1]


@torch.no_grad()
def early_image_features(
    model: DCRRG, data: TrainData, images: Tensor, train_from_block: int, ctx: Harness, batch: int = 32
) -> Tensor:
    """The frozen early layers' output (N, V, C, h, w) for cached uint8 studies (N, V, S, S)."""
    early = model.clip.image_encoder.split_at(train_from_block)[0]
    out = []
    for start in range(0, len(images), batch):
        x = _images(data, images[start : start + batch], ctx)
        out.append(early(channels_last(x.flatten(0, 1))).unflatten(0, x.shape[:2]))
    return torch.cat(out)


def step1(model: DCRRG, data: TrainData, settings: Step1Settings, ctx: Harness) -> Stage:
    """Step 1: observation-level CE on images and on report texts, all 14 labels per study, weighted
    by :func:`train.dcrrg.data.balance_weights`; extra image-only data joins the image side.

    ``settings.train_from_block`` (optional) freezes the image encoder's early layers
    (:func:`freeze_early_image_layers`)."""
    data.encoded = None
    model.requires_grad_(False)
    model.clip.requires_grad_(True)
    model.train()
    start = settings.train_from_block
    frozen = freeze_early_image_layers(model, start)
    frozen_text = freeze_early_text_layers(model, settings.text_train_from_layer)
    images, targets, weights = data.images, data.targets, data.weights
    early = paired_early_features(model, data, start, ctx) if start else None
    if data.extra_images is not None:
        images = torch.cat([images, data.extra_images])
        targets, weights = torch.cat([targets, data.extra_targets]), torch.cat([weights, data.extra_weights])
        if early is not None:
            early = torch.cat([early, early_image_features(model, data, data.extra_images, start, ctx)])
    if frozen and ctx.info.is_main:
        logger.info("step1: image encoder layers before block %d frozen (%d parameters), their "
                    "output cached", start, frozen)  # fmt: skip
    if frozen_text and ctx.info.is_main:
        logger.info("step1: text encoder embeddings and layers before %d frozen (%d parameters)",
                    settings.text_train_from_layer, frozen_text)  # fmt: skip
    size = settings.batch_size
    image_stream = index_batches(len(images), size, ctx.generator, ctx.info)
    text_stream = index_batches(len(data.reports), size, ctx.generator, ctx.info)

    def batches() -> Iterator[dict[str, Any]]:
        for image_index, text_index in zip(image_stream, text_stream, strict=False):
            yield {
                "images": _images(data, images[image_index], ctx) if early is None else early[image_index],
                "image_targets": targets[image_index], "image_weights": weights[image_index],
                "texts": [data.reports[i] for i in text_index.tolist()],
                "text_targets": data.targets[text_index], "text_weights": data.weights[text_index],
            }  # fmt: skip

    def loss(m: DCRRG, b: dict[str, Any]) -> Tensor:
        device = ctx.device
        images = Labelled(
            m.clip.encode_image(b["images"], start if early is not None else None)[0],
            b["image_targets"].to(device), b["image_weights"].to(device),
        )  # fmt: skip
        texts = Labelled(
            m.clip.encode_text(b["texts"]), b["text_targets"].to(device), b["text_weights"].to(device)
        )
        return dcrrg_losses.step1_loss(m.clip, images, texts)

    return _stage(model, loss, batches(), settings, len(images), data)


def step2(model: DCRRG, data: TrainData, settings: Step2Settings, ctx: Harness) -> Stage:
    """Step 2: the CSM loss on image-report pairs; both sides carry the report's labels.

    ``settings.step1_weight`` (optional, default 0: the paper's pure CSM) adds that times the
    Step-1 loss of both modalities. Step 2 moves the encoders under Step 1's classification heads,
    which Table 7's probabilities and the decoder's observation rows still read: on the 1,000-study
    phantom set 23 pure-CSM iterations took the Step-1 test mean AUROC from 0.90 to 0.81.
    ``settings.train_from_block`` freezes the early image layers as in Step 1.
    """
    data.encoded = None
    model.requires_grad_(False)
    model.clip.requires_grad_(True)
    model.train()
    start = settings.train_from_block
    freeze_early_image_layers(model, start)
    freeze_early_text_layers(model, settings.text_train_from_layer)
    early = paired_early_features(model, data, start, ctx) if start else None
    step1_weight = settings.step1_weight
    stream = index_batches(len(data.reports), settings.batch_size, ctx.generator, ctx.info)

    def batches() -> Iterator[dict[str, Any]]:
        for index in stream:
            yield {
                "images": _images(data, data.images[index], ctx) if early is None else early[index],
                "texts": [data.reports[i] for i in index.tolist()],
                "labels": data.targets[index].to(ctx.device),
                "weights": data.weights[index].to(ctx.device),
            }

    def loss(m: DCRRG, b: dict[str, Any]) -> Tensor:
        image_uni = m.clip.encode_image(b["images"], start if early is not None else None)[0]
        text_uni = m.clip.encode_text(b["texts"])
        return dcrrg_losses.step2_loss(m.clip, image_uni, text_uni, b["labels"], b["weights"], step1_weight)

    return _stage(model, loss, batches(), settings, len(data.reports), data)


def description_batches(
    data: TrainData, cache: CachedFeatures | None, batch_size: int, ctx: Harness
) -> Iterator[dict[str, Any]]:
    """Endless batches of (study, observation) pairs for Step 3's loss, drawn by
    ``data.description_weights`` (:func:`train.dcrrg.data.description_weights`): the studies'
    cached image and text features (without a cache, model-ready images and no texts, for encoders
    that train), the observations (B,), the description ids (B, T) and the studies' labels (B, 14)
    that a label-conditioned decoder writes for."""
    count = len(data.reports) * NUM_OBSERVATIONS
    weights = None if data.description_weights is None else data.description_weights.flatten()
    for index in index_batches(count, batch_size, ctx.generator, ctx.info, weights):
        studies, observations = index // NUM_OBSERVATIONS, index % NUM_OBSERVATIONS
        ids = [data.descriptions[s][k] for s, k in zip(studies.tolist(), observations.tolist(), strict=True)]
        yield {
            "images": _images(data, data.images[studies], ctx) if cache is None else cache.images(studies),
            "texts": None if cache is None else cache.texts(studies),
            "observations": observations.to(ctx.device),
            "ids": pad_ids(ids, data.pad_id).to(ctx.device),
            "states": data.states[studies].to(ctx.device),
        }


def step3(model: DCRRG, data: TrainData, settings: Step3Settings, ctx: Harness) -> Stage:
    """Step 3: one description per (study, observation), from the images and from the report text
    (the augmented view); DCCLIP frozen and in eval mode (its batch-norm statistics stay put).
    Pairs are drawn by :func:`description_batches`."""
    model.freeze_encoders()
    model.train()
    model.clip.eval()
    cache = cached_features(model, data, ctx)
    count = len(data.reports) * NUM_OBSERVATIONS
    text_view = settings.text_view

    def loss(m: DCRRG, b: dict[str, Any]) -> Tensor:
        image = dcrrg_losses.step3_loss(m, b["images"], b["observations"], b["ids"], b["states"])
        if not text_view:
            return image
        return image + dcrrg_losses.step3_loss(m, b["texts"], b["observations"], b["ids"], b["states"])

    batches = description_batches(data, cache, settings.batch_size, ctx)
    return _stage(model, loss, batches, settings, count, data)


def step4(
    model: DCRRG, data: TrainData, settings: Step4Settings, ctx: Harness, mode: str
) -> tuple[Stage, dict[str, Any]]:
    """Step 4: full reports by prompt tuning (``pt``), full fine-tuning (``fft``, Table 4), or
    fine-tuning of the decoder side with the encoders frozen (``decoder``).

    The decoder that writes the reports also writes the Step-3 descriptions (Table 7's last
    column). Prompt tuning leaves it frozen; the other forms retrain it, and on the report loss alone
    it forgets how to describe (demo phantoms: descriptions asserted findings the study lacked in
    66% of rows, against 3% after Step 3). So each batch also rehearses Step 3's image loss on as
    many (study, observation) pairs, weighted by :func:`description_weight`. Returns the stage and
    what it trains (for the metrics)."""
    trainable, total, share = model.enable_step4(mode)
    rehearse = description_weight(settings, mode)
    if ctx.info.is_main:
        logger.info("step4 (%s): %d of %d parameters train (%.2f%%)", mode, trainable, total, 100 * share)
        if rehearse:
            logger.info("step4: Step-3 descriptions rehearsed at weight %g", rehearse)
    model.train()
    cache = None
    if mode in ("pt", "decoder"):  # encoders frozen: train on their cached outputs
        model.clip.eval()
        cache = cached_features(model, data, ctx)
    size = settings.batch_size
    stream = index_batches(len(data.reports), size, ctx.generator, ctx.info)
    described = description_batches(data, cache, size, ctx) if rehearse else None

    def batches() -> Iterator[dict[str, Any]]:
        for index in stream:
            ids = [data.report_ids[i] for i in index.tolist()]
            batch = {
                "images": _images(data, data.images[index], ctx) if cache is None else cache.images(index),
                "ids": pad_ids(ids, data.pad_id).to(ctx.device),
                "states": data.states[index].to(ctx.device),
            }
            yield batch if described is None else {**batch, "descriptions": next(described)}

    def loss(m: DCRRG, b: dict[str, Any]) -> Tensor:
        d = b.get("descriptions")
        rehearsal = (
            None if d is None else DescriptionBatch(d["images"], d["observations"], d["ids"], d["states"])
        )
        return dcrrg_losses.step4_loss(m, b["images"], b["ids"], rehearsal, rehearse, b["states"])

    summary = {"mode": mode, "trainable": trainable, "total": total, "trainable_share": share,
               "description_weight": rehearse}  # fmt: skip
    return _stage(model, loss, batches(), settings, len(data.reports), data), summary


def description_weight(settings: Step4Settings, mode: str) -> float:
    """Step 4's ``description_weight``: 0 for ``pt``, whose decoder is frozen and so cannot forget;
    otherwise as set, else 1 for ``decoder`` (ours) and 0 for ``fft`` (Table 4's form, as the paper
    trains it)."""
    if mode == "pt":
        return 0.0
    value = settings.description_weight
    return float(value) if value is not None else (1.0 if mode == "decoder" else 0.0)
