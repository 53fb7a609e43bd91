"""LSU's tokenizers in training: token ids computed once, the token probe, and the feature tokenizer's fit.

Both kinds (:data:`~rrg_core.models.uar.config.TOKENIZERS`) are frozen once made: the dVAE is trained
(:mod:`train.uar.dvae_steps`), the feature tokenizer's k-means codebook is fit on the training views
(:func:`fit_feature_tokenizer`), after its encoder is fine-tuned on the training findings when the
preset asks (:func:`finetune_features`). Either one's tokens are read by the same probe
(:mod:`train.uar.token_probe`), so the two are compared on one figure.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from rrg_core.metrics.ranking import auroc_per_observation
from rrg_core.models.uar.dvae import DVAE, DVAEEncoder
from rrg_core.models.uar.feature_tokenizer import FeatureTokenizer, FeatureTokenizerConfig
from rrg_core.models.uar.losses import findings_bce
from rrg_core.observations import NUM_OBSERVATIONS
from train.common.runtime import refresh_threads
from train.uar.data import ImageSettings, UARData
from train.uar.presets import FeatureFit
from train.uar.token_probe import probe_tokens

LSUTokenizer = DVAEEncoder | FeatureTokenizer


def encoder_of(tokenizer: DVAE | LSUTokenizer) -> LSUTokenizer:
    """The part that makes tokens: a dVAE's encoder, or the feature tokenizer itself."""
    return tokenizer.encoder if isinstance(tokenizer, DVAE) else tokenizer


def code_vectors(tokenizer: DVAE | FeatureTokenizer) -> Tensor:
    """The (K, D) vectors of the tokenizer's codes: the dVAE's codebook or the k-means centres."""
    return tokenizer.codebook.weight if isinstance(tokenizer, DVAE) else tokenizer.codebook


@torch.no_grad()
def tokenize(
    tokenizer: LSUTokenizer, studies: Tensor, image: ImageSettings, device: torch.device, batch: int = 64
) -> Tensor:
    """The frozen tokenizer's code ids of cached studies uint8 (N, V, size, size): (N, V, h, w) on the
    CPU, computed once, since training without crops sees the same tokens on every epoch."""
    parts = [
        tokenizer.tokens(image.to_input(studies[start : start + batch], device)).cpu()
        for start in range(0, len(studies), batch)
    ]
    if not parts:
        grid = image.size // tokenizer.config.downsample
        return torch.empty((0, studies.shape[1], grid, grid), dtype=torch.long)
    return torch.cat(parts)


def probe_findings(
    tokenizer: DVAE | LSUTokenizer, data: UARData, epochs: int, device: torch.device, seed: int
) -> dict[str, Any]:
    """:func:`~train.uar.token_probe.probe_tokens` on the training and validation studies' tokens
    (centre crops) with its time; an empty dict without validation studies or with 0 epochs."""
    if not data.val_records or epochs <= 0:
        return {}
    started = time.perf_counter()
    encoder = encoder_of(tokenizer)
    train = tokenize(encoder, data.train_images, data.image, device)
    val = tokenize(encoder, data.val_images, data.image, device)
    result = probe_tokens(
        train, data.findings(), val, data.findings(val=True),
        encoder.config.codebook_size, {"epochs": epochs}, seed,
    )  # fmt: skip
    return {**result, "seconds": round(time.perf_counter() - started, 1)} if result else {}


def fit_feature_tokenizer(
    config: FeatureTokenizerConfig, data: UARData, device: torch.device, fit: FeatureFit, seed: int,
    batch: int = 64,
) -> tuple[FeatureTokenizer, dict[str, Any], Tensor]:  # fmt: skip
    """The ImageNet-initialised tokenizer, fine-tuned on the training findings when ``fit`` asks, with
    its codebook fit by k-means on every training view (centre crops when the cache is larger); the
    fit's figures with its time; and the training studies' tokens (N, V, h, w), made on the way."""
    started = time.perf_counter()
    tokenizer = FeatureTokenizer(config, pretrained=True).to(device)
    figures: dict[str, Any] = {}
    if fit.finetune_epochs:
        figures["finetune"] = finetune_features(tokenizer, data, fit, device, seed)
    views = data.train_views().unsqueeze(1)  # (N * V, 1, S, S): each view on its own
    batches = (
        data.image.to_input(views[i : i + batch], device).flatten(0, 1) for i in range(0, len(views), batch)
    )
    codebook = tokenizer.fit_codebook(batches, iterations=fit.iterations, seed=seed)
    figures.update(codebook.figures)
    tokens = codebook.codes.unflatten(0, data.train_images.shape[:2]).cpu()
    return (
        tokenizer,
        {**figures, "iterations": fit.iterations, "seconds": round(time.perf_counter() - started, 1)},
        tokens,
    )


def finetune_features(
    tokenizer: FeatureTokenizer, data: UARData, fit: FeatureFit, device: torch.device, seed: int
) -> dict[str, Any]:
    """Fine-tune the tokenizer's encoder from flat block ``finetune_from`` to the cut on the training
    studies' findings (ours): a linear head over each view's mean- and max-pooled feature map, binary
    cross-entropy, AdamW at ``finetune_lr``. The layers before ``finetune_from`` stay as they are and
    run once per view. Batch norms keep their ImageNet statistics (the tokenizer stays in eval
    mode), so the features are the same at fitting and at use. The head is dropped after; the
    encoder is frozen again.

    ImageNet features quantised to a few hundred codes keep the large findings and lose the small
    ones (docs/presets.md, UAR demo); trained on the findings first, the cells that show one become
    codes of their own. Returns the last step's loss, the val AUROC of the head and the seconds."""
    started = time.perf_counter()
    start = fit.finetune_from
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(2 * data.spec.views * tokenizer.feature_dim, NUM_OBSERVATIONS).to(device)
    late = tokenizer.features[tokenizer.layer_of(start) :]
    late.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [*late.parameters(), *head.parameters()], lr=fit.finetune_lr, weight_decay=0.01
    )

    def early(studies: Tensor) -> Tensor:  # uint8 (B, V, S, S) -> (B * V, C, h, w), centre crops
        return tokenizer.early_map(data.image.to_input(studies, device).flatten(0, 1), start)

    def logits(early_maps: Tensor) -> Tensor:
        maps = tokenizer.late_map(early_maps, start).flatten(2)  # (B * V, D, h * w)
        pooled = torch.cat([maps.mean(dim=2), maps.amax(dim=2)], dim=1)
        return head(pooled.reshape(len(maps) // data.spec.views, -1))

    with torch.no_grad():  # what does not train is computed once
        train_maps = torch.cat([early(b) for b in data.train_images.split(64)]).unflatten(
            0, (-1, data.spec.views)
        )
    findings, loss = data.findings(), torch.zeros(())
    for _epoch in range(fit.finetune_epochs):
        refresh_threads()
        for index in torch.randperm(len(train_maps), generator=generator).split(fit.finetune_batch_size):
            loss = findings_bce(logits(train_maps[index].flatten(0, 1)), findings[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    late.requires_grad_(False)
    tokenizer.weights_changed()
    result: dict[str, Any] = {
        "epochs": fit.finetune_epochs,
        "from_block": start,
        "final_loss": round(float(loss.detach()), 4),
    }
    if len(data.val_images):
        with torch.no_grad():
            probabilities = torch.cat(
                [torch.sigmoid(logits(early(b))).float().cpu() for b in data.val_images.split(64)]
            )
        summary = auroc_per_observation(data.findings(val=True).float(), probabilities)
        result["val_findings_auroc"] = summary.mean_or_none
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result
