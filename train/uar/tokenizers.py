"""LSU's tokenizers in training: token ids computed once, the token probe, and the feature tokenizer's fit.

Both kinds (:data:`~rrg_core.models.uar.config.TOKENIZERS`) are frozen once made: the dVAE is trained
(:mod:`train.uar.dvae_steps`), the feature tokenizer's k-means codebook is fit on the training views
(:func:`fit_feature_tokenizer`). Either one's tokens are read by the same probe
(:mod:`train.uar.token_probe`), so the two are compared on one figure.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from rrg_core.models.uar.dvae import DVAE, DVAEEncoder
from rrg_core.models.uar.feature_tokenizer import FeatureTokenizer, FeatureTokenizerConfig
from train.uar.data import ImageSettings, UARData
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
    config: FeatureTokenizerConfig, data: UARData, device: torch.device, iterations: int, seed: int,
    batch: int = 64,
) -> tuple[FeatureTokenizer, dict[str, Any]]:  # fmt: skip
    """The ImageNet-initialised tokenizer with its codebook fit by k-means on every training view
    (centre crops when the cache is larger), and the fit's figures with its time."""
    started = time.perf_counter()
    tokenizer = FeatureTokenizer(config, pretrained=True).to(device)
    views = data.train_views().unsqueeze(1)  # (N * V, 1, S, S): each view on its own
    batches = (
        data.image.to_input(views[i : i + batch], device).flatten(0, 1) for i in range(0, len(views), batch)
    )
    figures = tokenizer.fit_codebook(batches, iterations=iterations, seed=seed)
    return tokenizer, {
        **figures,
        "iterations": iterations,
        "seconds": round(time.perf_counter() - started, 1),
    }
