"""UAR's two training stages (paper sec. 3.5) and their validation.

Stage 1: lambdas {1, 1, 0}, no TIR mask; stage 2: {1, 1, 1} with the mask (the model's
:meth:`~rrg_core.models.uar.UAR.set_stage` switches both). Visual input is the frozen dVAE's token
ids, computed once per study when training uses no random crop (``tokens`` given), else images
cropped per draw and tokenized by the dVAE encoder attached to the model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rrg_core.metrics import alignment_score
from rrg_core.metrics.ranking import auroc_per_observation
from rrg_core.models.uar import UAR
from rrg_core.observations import NUM_OBSERVATIONS
from train.common.harness import Harness, Stage, Terms, iterations
from train.common.runner import index_batches
from train.common.thresholds import ThresholdSettings, choose
from train.uar.data import UARData
from train.uar.presets import StageSettings

logger = logging.getLogger(__name__)


@dataclass
class VisualInput:
    """Per-study visual input: cached token ids (N, V, h, w), or None to tokenize images per batch."""

    train_tokens: Tensor | None
    val_tokens: Tensor | None

    def train_batch(self, data: UARData, index: Tensor, ctx: Harness, crops: torch.Generator) -> Tensor:
        if self.train_tokens is not None:
            return self.train_tokens[index].to(ctx.device)
        return data.image.to_input(
            data.train_images[index], ctx.device, crops if data.image.random_crop else None
        )

    def val_batch(self, data: UARData, index: Tensor, device: torch.device) -> Tensor:
        if self.val_tokens is not None:
            return self.val_tokens[index].to(device)
        return data.image.to_input(data.val_images[index], device)


def train_stage(
    model: UAR, stage: int, data: UARData, visual: VisualInput, settings: StageSettings, ctx: Harness
) -> Stage:
    """One stage for the harness; its terms are eq 13's parts (the metrics average the last epoch)."""
    model.set_stage(stage)  # before the optimizer and DDP wrapper: the mask trains in stage 2 only
    model.train()
    terms = Terms()
    crops = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,), generator=ctx.generator)))

    def batches():
        for index in index_batches(len(data.report_ids), settings.batch_size, ctx.generator, ctx.info):
            yield visual.train_batch(data, index, ctx, crops), data.reports(index).to(ctx.device), index

    total, _ = iterations(settings, len(data.report_ids), ctx.info)
    warmup = round((settings.triplet_warmup or 0.0) * total)
    findings = data.findings() if model.findings_head is not None else None

    def loss_fn(module: nn.Module, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        visual_input, report_ids, index = batch
        # Cold-start global features are all alike, and eq 10's hardest negative alone does not
        # separate them (they stay at cosine ~0.99); averaging over negatives first does. Two
        # studies with the same findings are no one's negatives: IU reports of the same findings
        # differ mostly in which normal statements they list, which no image can tell apart.
        out = module(
            visual_input, report_ids, hardest_negatives=terms.calls >= warmup,
            not_negatives=data.same_findings(index), findings=None if findings is None else findings[index],
        )  # fmt: skip
        terms.calls += 1
        terms.add(ce=out.ce.detach(), global_loss=out.global_loss.detach(), mask_loss=out.mask_loss.detach())
        if findings is not None:
            terms.add(findings_loss=out.findings_loss.detach())
        return out.loss

    return Stage(settings, model, loss_fn, batches(), len(data.report_ids), terms=terms)


@torch.no_grad()
def validate(model: UAR, data: UARData, visual: VisualInput, device: torch.device, batch: int = 32) -> dict:
    """Teacher-forced CE on the val split, the alignment score (footnote 3) of its CRA global
    features and, with a findings head, its mean AUROC; {} without a val split."""
    count = len(data.val_report_ids)
    if not count:
        return {}
    was_training = model.training
    model.eval()
    ce_sum, tokens, images, reports, findings = 0.0, 0, [], [], []
    for start in range(0, count, batch):
        index = torch.arange(start, min(start + batch, count))
        ids = data.reports(index, val=True).to(device)
        features = visual.val_batch(data, index, device)
        out = model(features, ids)
        real = int((ids[:, 1:] != model.config.pad_id).sum())
        ce_sum, tokens = ce_sum + float(out.ce) * real, tokens + real
        images.append(model.image_global(features).float().cpu())
        reports.append(model.report_global(ids).float().cpu())
        if out.findings_logits is not None:
            findings.append(out.findings_logits.float().sigmoid().cpu())
    model.train(was_training)
    result = {"val_ce": ce_sum / max(tokens, 1)}
    if findings:
        summary = auroc_per_observation(data.findings(val=True).float(), torch.cat(findings))
        result["val_findings_auroc"] = summary.mean_or_none
    if count > 1:
        result["val_alignment_score"] = alignment_score(torch.cat(images), torch.cat(reports))
    return result


@torch.no_grad()
def head_probabilities(
    model: UAR, data: UARData, visual: VisualInput, device: torch.device, val: bool, batch: int = 64
) -> Tensor:
    """The findings head's probabilities (N, 14) of the training (or validation) studies, eval mode."""
    was_training = model.training
    model.eval()
    count = len(data.val_report_ids if val else data.report_ids)
    out = []
    for start in range(0, count, batch):
        index = torch.arange(start, min(start + batch, count))
        if val:
            features = visual.val_batch(data, index, device)
        elif visual.train_tokens is not None:
            features = visual.train_tokens[index].to(device)
        else:  # a random-crop preset: the centre crop, as inference sees it
            features = data.image.to_input(data.train_images[index], device)
        out.append(torch.sigmoid(model.findings_logits(model.encode(features)).float()).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, NUM_OBSERVATIONS)


def calibrate(
    model: UAR, data: UARData, visual: VisualInput, device: torch.device, settings: ThresholdSettings
) -> dict:
    """With labels given to the decoder (``label_context``, ``label_rows``): the findings head's
    thresholds chosen by the preset's rule and studies, stored in the model; {} otherwise or without
    a val split."""
    if not model.config.reads_labels or not data.val_report_ids:
        return {}

    def split(val: bool) -> tuple[Tensor, Tensor]:
        return head_probabilities(model, data, visual, device, val), data.findings(val=val).float()

    train = split(False) if settings.studies == "train+val" else None
    thresholds, summary = choose(split(True), settings.rule, train)
    model.set_thresholds(thresholds)
    logger.info("findings head thresholds: %s", summary["threshold_rule"])
    return {key: value for key, value in summary.items() if key != "val_auroc_mean"}


@torch.no_grad()
def example_report(model: UAR, data: UARData, visual: VisualInput, device: torch.device, beam: int) -> str:
    """The generated report of the first validation study (for the log), or "" without one."""
    if not data.val_report_ids:
        return ""
    was_training = model.training
    model.eval()
    features = visual.val_batch(data, torch.tensor([0]), device)
    tokens = model.generate(features, beam_size=beam).tokens[0]
    model.train(was_training)
    return data.vocab.decode(tokens)
