"""What UAR's training minimises: the dVAE's objective (LSU) and eq 13 for both stages.

- :func:`dvae_loss`: reconstruction MSE + beta KL(q || uniform) of the tokenizer.
- :func:`stage_loss`: eq 13, ``lambda_1 CE + lambda_2 L_Global + lambda_3 L_Mask`` (+ our optional
  findings term); the stage (:meth:`UAR.set_stage`) sets the lambdas and whether TIR's mask is on.
- :func:`triplet_loss`: eq 10, CRA's global alignment.
- :func:`findings_bce`: ours, the findings term (UAR's findings head, the feature tokenizer's fine-tuning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn import functional

from rrg_core.models.uar.cra import masked_mean

if TYPE_CHECKING:  # the networks import this module; the functions take them as arguments
    from rrg_core.models.uar.config import UARConfig
    from rrg_core.models.uar.model import UAR


@dataclass
class DVAELosses:
    """Mean reconstruction error, mean KL(q || uniform) per cell, and their weighted sum."""

    reconstruction: Tensor
    kl: Tensor
    total: Tensor


def kl_to_uniform(logits: Tensor) -> Tensor:
    """Mean over cells of KL(softmax(logits) || uniform) in nats; logits (B, K, h, w).

    KL(q || U) = sum_k q_k log q_k + log K: zero for a uniform q, log K for a one-hot q.
    """
    log_q = logits.float().log_softmax(dim=1)
    return (log_q.exp() * log_q).sum(dim=1).mean() + math.log(logits.shape[1])


def dvae_loss(images: Tensor, reconstruction: Tensor, logits: Tensor, beta: float) -> DVAELosses:
    """The dVAE's objective: reconstruction MSE + ``beta`` * KL of the code distribution to uniform."""
    reconstruction_error = functional.mse_loss(reconstruction, images)
    kl = kl_to_uniform(logits)
    return DVAELosses(reconstruction_error, kl, reconstruction_error + beta * kl)


@dataclass
class UAROutput:
    """Eq 13's total and its terms (each already a scalar; unused terms are 0), plus the logits.
    ``findings_loss`` is our auxiliary term (0 without the findings head or labels) and
    ``findings_logits`` (B, 14) the head's output, None without the head."""

    loss: Tensor
    ce: Tensor
    global_loss: Tensor
    mask_loss: Tensor
    logits: Tensor
    findings_loss: Tensor
    findings_logits: Tensor | None = None


def stage_loss(
    model: UAR,
    visual: Tensor,
    report_ids: Tensor,
    hardest_negatives: bool = True,
    not_negatives: Tensor | None = None,
    findings: Tensor | None = None,
) -> UAROutput:
    """Eq 13 on a batch: ``visual`` as :meth:`UAR.embed_visual` takes it, ``report_ids`` (B, T) =
    BOS words EOS, right-padded with PAD. ``hardest_negatives`` False averages eq 10 over all
    negatives (the trainer's warm-up; :func:`triplet_loss`). ``not_negatives`` (B, B) bool marks
    further pairs, beside identical reports, that eq 10 must not treat as negatives (the trainer
    passes studies with the same findings). ``findings`` (B, 14) bool, the studies' positive
    observations, trains the findings head when there is one, and is the labels the decoder is given
    when it is given labels. The stage (:meth:`UAR.set_stage`)
    sets the lambdas: stage 1 {1, 1, 0} without the mask, stage 2 {1, 1, 1} with it."""
    inputs = _drop_words(report_ids, model.config) if model.training else report_ids
    # Given labels at all, the decoder is given the report's own in training, so it learns to write them.
    states = findings.long() if findings is not None and model.config.reads_labels else None
    encoding, logits = model.teacher_forced(visual, inputs, states)
    ids = report_ids.to(encoding.memory.device).long()
    ce = functional.cross_entropy(
        logits.flatten(0, 1).float(), ids[:, 1:].flatten(), ignore_index=model.config.pad_id
    )
    lambda_ce, lambda_global, lambda_mask = model.loss_weights()
    zero = ce.new_zeros(())
    global_loss = zero
    if lambda_global:
        image = masked_mean(encoding.features)
        exclude = same_reports(ids)
        if not_negatives is not None:
            exclude = exclude | not_negatives.to(exclude.device)
        global_loss = triplet_loss(
            image, model.report_global(ids), model.config.margin, exclude, hardest_negatives
        )
    mask_loss = model.mask_loss() if lambda_mask else zero
    findings_logits = model.findings_logits(encoding) if model.findings_head is not None else None
    findings_loss = zero
    if findings_logits is not None and findings is not None:
        findings_loss = findings_bce(findings_logits, findings)
    total = lambda_ce * ce + lambda_global * global_loss + lambda_mask * mask_loss
    total = total + model.config.lambda_findings * findings_loss
    return UAROutput(total, ce, global_loss, mask_loss, logits, findings_loss, findings_logits)


def findings_bce(logits: Tensor, findings: Tensor) -> Tensor:
    """Our findings term: binary cross-entropy of logits (B, 14) against the studies' positive
    observations (B, 14) bool (UAR's findings head, and the feature tokenizer's fine-tuning)."""
    return functional.binary_cross_entropy_with_logits(
        logits.float(), findings.to(logits.device, torch.float32)
    )


def _drop_words(report_ids: Tensor, config: UARConfig) -> Tensor:
    """The decoder's inputs with a ``word_dropout`` share of the words (not BOS, EOS or PAD) set to
    ``unk_id``; the targets stay the true words."""
    if config.word_dropout <= 0:
        return report_ids
    special = (report_ids == config.pad_id) | (report_ids == config.bos_id) | (report_ids == config.eos_id)
    drop = (torch.rand(report_ids.shape, device=report_ids.device) < config.word_dropout) & ~special
    return report_ids.masked_fill(drop, config.unk_id)


def same_reports(report_ids: Tensor) -> Tensor:
    """(B, B) bool: True where two rows hold the same report (never each other's negatives)."""
    return (report_ids[:, None, :] == report_ids[None, :, :]).all(dim=-1)


def triplet_loss(
    image_global: Tensor,
    report_global: Tensor,
    margin: float = 0.2,
    exclude: Tensor | None = None,
    hardest: bool = True,
) -> Tensor:
    """Eq 10 with in-batch hardest negatives, averaged over the batch.

    For pair i with cosine similarity s_ii and s_ij = cos(image_i, report_j):
    ``relu(margin - s_ii + max_{j != i} s_ij) + relu(margin - s_ii + max_{j != i} s_ji)``: the hardest
    report for image i as anchor, and the hardest image for report i as anchor.

    ``exclude`` (B, B) bool marks pairs that must not serve as negatives, e.g. two studies with the
    same report text (common in IU X-ray: "no acute cardiopulmonary abnormality"), which would
    otherwise be pushed apart. An anchor without any negative contributes zero (so a batch of one
    gives zero).

    ``hardest=False`` averages the hinge over all of an anchor's negatives instead (the sum form
    that VSE++, Faghri et al. 2018, compares with, divided by the number of negatives). From a cold
    start every global feature is nearly the same, and the hardest-negative form then stays at
    2 * margin without separating them; the training loop uses this form for a warm-up (see
    ``triplet_warmup`` in train/uar).
    """
    if image_global.shape != report_global.shape or image_global.dim() != 2:
        raise ValueError(
            f"need two (batch, d) feature sets of one shape, got {tuple(image_global.shape)} "
            f"and {tuple(report_global.shape)}"
        )
    similarity = functional.normalize(image_global, dim=-1) @ functional.normalize(report_global, dim=-1).T
    positive = similarity.diagonal()
    not_negative = torch.eye(similarity.shape[0], dtype=torch.bool, device=similarity.device)
    if exclude is not None:
        not_negative = not_negative | exclude.to(similarity.device).bool()
    if not hardest:
        negatives = (~not_negative).to(similarity.dtype)
        image_anchor = functional.relu(margin - positive[:, None] + similarity) * negatives  # row i: image i
        report_anchor = functional.relu(margin - positive[None, :] + similarity) * negatives  # column j
        counts = negatives.sum(dim=1).clamp(min=1.0)  # symmetric: row i and column i count alike
        return (image_anchor.sum(dim=1) / counts + report_anchor.sum(dim=0) / counts).mean()
    masked = similarity.masked_fill(not_negative, float("-inf"))
    hardest_report = masked.max(dim=1).values  # image i as anchor
    hardest_image = masked.max(dim=0).values  # report i as anchor
    # An anchor with no negative has max -inf, and relu(-inf) = 0 with zero gradient.
    loss = functional.relu(margin - positive + hardest_report) + functional.relu(
        margin - positive + hardest_image
    )
    return loss.mean()
