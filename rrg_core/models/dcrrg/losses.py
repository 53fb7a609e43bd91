"""What each DCRRG training step minimises, one function per step, all taking encoder outputs.

Training hands these the encoders' outputs however it got them (images through the whole encoder,
a cached early-layer output through the rest, or frozen features cached once per study), so the
model needs one forward API and these functions are the whole of each step's objective:

- Step 1 (:func:`step1_loss`): observation-level cross-entropy of both modalities.
- Step 2 (:func:`step2_loss`): the CSM loss below, plus an optional share of Step 1's.
- Step 3 (:func:`step3_loss`): one observation's description, token cross-entropy (eq. 14).
- Step 4 (:func:`step4_loss`): the full report, optionally rehearsing Step 3.

Calibrated Semantic Matching (CSM) loss, DCRRG Step 2 (paper sec. 3.2, eqs 3-9).

CLIP's InfoNCE treats every off-diagonal pair in a batch as a negative, although two studies with
the same findings are not negatives. SM loss replaces the one-hot targets with soft targets built
from label similarity; CSM further weights that similarity by how alike the two studies' uni-modal
embeddings are, so that pairs with identical labels but different details are told apart.

Conventions decided here, where the paper is silent or inexact:

- **All-zero label vectors** (eq. 3 divides by the norm): an all-zero vector matches only another
  all-zero vector, ``s = 1`` when both are zero and ``s = 0`` when exactly one is. Two studies with
  nothing positive do say the same thing; a study with nothing positive shares nothing with one
  that has findings.
- **Calibration weights** (eqs 4-5) use the *raw* uni-modal encoder embeddings ``t`` and ``v`` (eqs
  1a, 2a), not the projected ones, and are **detached**: they shape the targets, and a target that
  carries gradient would let the model lower the loss by moving the targets instead of the logits.
- **Eq. 7**'s denominator sums over ``i`` but normalises over ``j`` (texts) for image-to-text; the
  softmax here runs over the candidates of each direction.
- **Eq. 8** repeats the sum over ``j``; the loss is the mean over anchors ``i`` of
  ``-sum_j y_ij log y^_ij``.
- **Temperature**: ``logit_scale`` is CLIP's learnable ``log(1 / tau)`` (initialised at
  ``log(1 / 0.07)``); it is clamped at ``log(100)`` before exponentiating, as CLIP does.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor
from torch.nn import functional

from rrg_core.models.dcrrg.config import FULL_REPORT

if TYPE_CHECKING:  # the network imports this module for its logit-scale constant
    from rrg_core.models.dcrrg.dcclip import DCCLIP
    from rrg_core.models.dcrrg.model import DCRRG, MemoryInputs

INITIAL_TEMPERATURE = 0.07
INITIAL_LOGIT_SCALE = math.log(1.0 / INITIAL_TEMPERATURE)
MAX_LOGIT_SCALE = math.log(100.0)


def _floating(tensor: Tensor) -> Tensor:
    """Integer or boolean labels as float32; floating tensors keep their precision."""
    return tensor if tensor.is_floating_point() else tensor.float()


def label_similarity(image_labels: Tensor, text_labels: Tensor) -> Tensor:
    """Eq. 3: cosine of label vectors, (N, 14) x (M, 14) -> (N, M).

    All-zero rows: 1 against another all-zero row, 0 against any non-zero row (module docstring).
    """
    image_labels, text_labels = _floating(image_labels), _floating(text_labels)
    cosine = functional.normalize(image_labels, dim=-1) @ functional.normalize(text_labels, dim=-1).T
    image_zero = image_labels.abs().sum(dim=-1) == 0
    text_zero = text_labels.abs().sum(dim=-1) == 0
    # normalize() maps a zero row to zeros, so "one zero" already gives 0; only "both zero" needs 1.
    return torch.where(image_zero[:, None] & text_zero[None, :], torch.ones_like(cosine), cosine)


def calibration_weights(uni: Tensor) -> Tensor:
    """Eqs 4-5: ``w_ij = cos(u_i, u_j) / 2 + 0.5`` in [0, 1], (N, D) -> (N, N), without gradient."""
    unit = functional.normalize(_floating(uni.detach()), dim=-1)
    return unit @ unit.T / 2 + 0.5


def soft_targets(weights: Tensor, similarity: Tensor) -> Tensor:
    """Eqs 4-5: softmax over candidates (dim 1) of the calibrated similarity ``w * s``."""
    return (weights * similarity).softmax(dim=1)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Eq. 8 (sensible reading): mean over rows of ``-sum_j y_ij log softmax(logits)_ij``."""
    return -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()


def contrastive_logits(image_emb: Tensor, text_emb: Tensor, logit_scale: Tensor) -> Tensor:
    """Eqs 6-7: ``cos(v~_i, t~_j) / tau`` as an (N, N) image-by-text matrix."""
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    return scale * functional.normalize(image_emb, dim=-1) @ functional.normalize(text_emb, dim=-1).T


def calibrated_semantic_matching_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    image_labels: Tensor,
    text_labels: Tensor,
    image_uni: Tensor,
    text_uni: Tensor,
    logit_scale: Tensor,
) -> Tensor:
    """Eq. 9: the CSM loss of a batch of N paired images and texts (row i of each belongs together).

    ``image_emb``/``text_emb`` (N, P): projected embeddings ``v_p``, ``t_p`` (eqs 1b, 2b).
    ``image_labels``/``text_labels`` (N, 14): observation label vectors (positive 1, else 0).
    ``image_uni`` (N, D), ``text_uni`` (N, M): raw encoder embeddings ``v``, ``t`` (eqs 1a, 2a) for
    the calibration weights. ``logit_scale``: scalar ``log(1 / tau)``. Returns a scalar.
    """
    n = image_emb.shape[0]
    for name, tensor in (("text_emb", text_emb), ("image_labels", image_labels), ("text_labels", text_labels),
                         ("image_uni", image_uni), ("text_uni", text_uni)):  # fmt: skip
        if tensor.shape[0] != n:
            raise ValueError(f"{name} has {tensor.shape[0]} rows, image_emb has {n}")
    logits = contrastive_logits(image_emb, text_emb, logit_scale)  # (N images, N texts)
    similarity = label_similarity(image_labels, text_labels).to(logits.dtype)  # s_ij, image i, text j
    # Image i -> texts j: weights from text-text similarity w_ij = sim(t_i, t_j) (eq. 4).
    targets_v2t = soft_targets(calibration_weights(text_uni).to(logits.dtype), similarity)
    # Text j -> images i: weights w^_ji = sim(v_j, v_i), label similarity s_ji = s_ij^T (eq. 5).
    targets_t2v = soft_targets(calibration_weights(image_uni).to(logits.dtype), similarity.T)
    loss_v2t = soft_cross_entropy(logits, targets_v2t)
    loss_t2v = soft_cross_entropy(logits.T, targets_t2v)
    return (loss_v2t + loss_t2v) / 2


# -- Step 1 -------------------------------------------------------------------------------------


def observation_loss(
    clip: DCCLIP,
    pooled: Tensor,
    modality: str,
    targets: Tensor,
    keep: Tensor | None = None,
    observation_index: Tensor | None = None,
) -> Tensor:
    """Step-1 CE of one modality from its raw embeddings ``v`` or ``t`` (N, D), averaged over kept
    labels.

    Either all 14 observations per sample (``observation_index`` None, ``targets``/``keep`` (N, 14))
    or one per sample as a balancing sampler draws them ((N,) each). ``targets``: 1 positive, 0
    negative or unmentioned; ``keep``: False for uncertain labels, which are dropped (or loss weights,
    e.g. balancing weights).
    """
    logits = clip.observation_logits(pooled, modality, observation_index)
    losses = functional.cross_entropy(logits.reshape(-1, 2), targets.reshape(-1).long(), reduction="none")
    if keep is None:
        return losses.mean()
    weights = keep.reshape(-1).to(losses.dtype)
    # clamp: a batch with only uncertain labels gives 0 (with a graph) instead of NaN
    return (losses * weights).sum() / weights.sum().clamp(min=1.0)


class Labelled(NamedTuple):
    """One modality's Step-1 batch: raw embeddings (N, D), 0/1 targets and loss weights (N, 14)."""

    pooled: Tensor
    targets: Tensor
    weights: Tensor


def step1_loss(clip: DCCLIP, images: Labelled, texts: Labelled) -> Tensor:
    """Step 1: the image side's and the text side's observation losses, each modality on its own
    studies (image-only extra data joins the image side)."""
    image = observation_loss(clip, images.pooled, "image", images.targets, images.weights)
    return image + observation_loss(clip, texts.pooled, "text", texts.targets, texts.weights)


# -- Step 2 -------------------------------------------------------------------------------------


def step2_loss(
    clip: DCCLIP,
    image_pooled: Tensor,
    text_pooled: Tensor,
    labels: Tensor,
    weights: Tensor | None = None,
    step1_weight: float = 0.0,
) -> Tensor:
    """Step 2: the CSM loss (eq. 9) of N paired studies, both sides carrying the report's (N, 14)
    labels, plus ``step1_weight`` times both modalities' Step-1 loss (ours; 0 is the paper's pure CSM).

    Why the Step-1 term: Step 2 moves the encoders under Step 1's classification heads, which Table 7's
    probabilities and the decoder's observation rows still read (docs/presets.md has the figures).
    """
    labels = labels.to(image_pooled.device)
    total = calibrated_semantic_matching_loss(
        clip.global_embedding(image_pooled, "image"), clip.global_embedding(text_pooled, "text"),
        labels, labels, image_pooled, text_pooled, clip.logit_scale,
    )  # fmt: skip
    if step1_weight:
        for pooled, modality in ((image_pooled, "image"), (text_pooled, "text")):
            total = total + step1_weight * observation_loss(clip, pooled, modality, labels, weights)
    return total


# -- Steps 3 and 4 ------------------------------------------------------------------------------


def token_loss(logits: Tensor, target_ids: Tensor, pad_id: int) -> Tensor:
    """Eq. 14: next-token cross-entropy, averaged over non-pad targets."""
    return functional.cross_entropy(logits.flatten(0, 1), target_ids.flatten(), ignore_index=pad_id)


def _written(
    model: DCRRG, inputs: MemoryInputs, prompt_index: Tensor, ids: Tensor, states: Tensor | None
) -> Tensor:
    ids = ids.to(prompt_index.device)
    logits = model.logits(inputs, prompt_index, ids[:, :-1], states)
    return token_loss(logits, ids[:, 1:], model.config.pad_id)


def step3_loss(
    model: DCRRG,
    inputs: MemoryInputs,
    observation_index: Tensor,
    description_ids: Tensor,
    states: Tensor | None = None,
) -> Tensor:
    """Step 3: describe observation k (B,) from images, texts or their cached encoder features;
    ids (B, T) = BOS ... EOS PAD. ``states`` (B, 14): the report's labels, which a model with
    ``label_prompts``/``label_rows`` is conditioned on (None: the reader's)."""
    return _written(model, inputs, observation_index, description_ids, states)


class DescriptionBatch(NamedTuple):
    """Step 3's inputs, rehearsed in Step 4: image features, observations (B,), ids (B, T) and the
    studies' labels (B, 14) or None."""

    inputs: MemoryInputs
    observation_index: Tensor
    description_ids: Tensor
    states: Tensor | None = None


def step4_loss(
    model: DCRRG,
    inputs: MemoryInputs,
    report_ids: Tensor,
    rehearsal: DescriptionBatch | None = None,
    rehearsal_weight: float = 0.0,
    states: Tensor | None = None,
) -> Tensor:
    """Step 4: the full report (B, T) from images or their features, through the deep prompts when
    prompt tuning is on; plus ``rehearsal_weight`` times Step 3's loss on ``rehearsal``. ``states``
    (B, 14): the reports' labels, for a model conditioned on labels (None: the reader's).

    Why rehearse: the decoder that writes the reports also writes Table 7's descriptions; retrained on
    reports alone (fft, decoder modes) it forgets how to describe (docs/presets.md)."""
    full = torch.full((report_ids.shape[0],), FULL_REPORT, device=model.report_prompt.device)
    loss = _written(model, inputs, full, report_ids, states)
    if rehearsal is None or not rehearsal_weight:
        return loss
    return loss + rehearsal_weight * step3_loss(model, *rehearsal)
