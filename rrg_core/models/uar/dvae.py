"""Discrete VAE image tokenizer: UAR's Latent Space Unifier (LSU, paper sec. 3.2).

UAR takes the encoder and codebook of DALL-E's dVAE; those weights cannot be downloaded here, so
this module defines a small dVAE of the same kind, trained on the training radiographs:

- an **encoder** (convolutions, ``log2(M)`` stride-2 downsamplings) maps an image (B, C, H, W) to
  logits (B, K, H/M, W/M) over a codebook of K entries;
- a **Gumbel-softmax** relaxation samples a soft one-hot code per cell at temperature ``tau``
  (annealed during training by :func:`gumbel_temperature`); in eval mode, or with ``hard=True``,
  the code is the argmax one-hot;
- the **codebook** (K, e) turns codes into vectors, and a **decoder** (nearest-neighbour upsampling
  plus convolutions) reconstructs the image.

The loss is DALL-E's evidence lower bound with a uniform prior: reconstruction error plus
``beta * KL(q || uniform)``, where q = softmax(logits) per cell. Both terms are *means* here
(reconstruction: squared error per pixel and channel, on the normalised image the model is fed;
KL: per grid cell, in nats), so ``kl_weight`` is independent of the image size. With DALL-E's
per-image sums the same balance is ``beta_sum = kl_weight * C * M^2``.

UAR uses only :meth:`DVAE.tokens` (the argmax code ids); the decoder exists to train the encoder and
to show reconstructions. There is no batch normalisation, so train and eval mode tokenize alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional

from rrg_core.errors import RRGError
from rrg_core.models.uar.losses import DVAELosses, dvae_loss


@dataclass
class DVAEConfig:
    """Sizes of a :class:`DVAE`. Defaults: 3-channel 112 px input, M = 8 (a 14 x 14 grid).

    DALL-E's codebook has 8192 entries; 512 is plenty for radiographs at demo and CPU sizes.
    ``hidden`` is the width of the first stage; each downsampling doubles it, up to 4x.
    """

    in_channels: int = 3
    image_size: int = 112
    downsample: int = 8
    codebook_size: int = 512
    embed_dim: int = 64
    hidden: int = 32
    kl_weight: float = 0.01

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise RRGError(f"dVAE in_channels must be 1 or 3, got {self.in_channels}")
        if self.downsample < 2 or self.downsample & (self.downsample - 1):
            raise RRGError(f"dVAE downsample M must be a power of two >= 2, got {self.downsample}")
        if self.image_size % self.downsample:
            raise RRGError(f"image_size {self.image_size} is not divisible by downsample {self.downsample}")
        for name in ("codebook_size", "embed_dim", "hidden"):
            if getattr(self, name) < 1:
                raise RRGError(f"dVAE {name} must be positive, got {getattr(self, name)}")
        if self.kl_weight < 0:
            raise RRGError(f"dVAE kl_weight must be >= 0, got {self.kl_weight}")

    @property
    def grid_size(self) -> int:
        """Side of the token grid, H / M."""
        return self.image_size // self.downsample

    @property
    def n_stages(self) -> int:
        """Number of stride-2 stages, log2(M)."""
        return int(math.log2(self.downsample))

    def stage_width(self, stage: int) -> int:
        """Channels after ``stage`` downsamplings (doubling, capped at 4x ``hidden``)."""
        return self.hidden * 2 ** min(stage, 2)


@dataclass
class DVAEOutput:
    """What :meth:`DVAE.forward` returns: reconstruction (B, C, H, W), logits (B, K, h, w), losses."""

    reconstruction: Tensor
    logits: Tensor
    losses: DVAELosses


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))): a cheap residual unit with no normalisation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class DVAEEncoder(nn.Module):
    """Image (B, C, H, W) -> codebook logits (B, K, H/M, W/M); the only part of the dVAE UAR keeps."""

    def __init__(self, config: DVAEConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, config.stage_width(0), 3, padding=1)]
        for stage in range(config.n_stages):
            width, wider = config.stage_width(stage), config.stage_width(stage + 1)
            layers += [ResidualBlock(width), nn.Conv2d(width, wider, 4, stride=2, padding=1)]
        top = config.stage_width(config.n_stages)
        layers += [ResidualBlock(top), nn.ReLU(), nn.Conv2d(top, config.codebook_size, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        """Codebook logits (B, K, h, w) of normalised images (B, C, H, W)."""
        _check_images(images, self.config)
        return self.net(images)

    @torch.no_grad()
    def tokens(self, images: Tensor) -> Tensor:
        """Argmax code ids: (B, C, H, W) -> (B, h, w), or per view (B, V, C, H, W) -> (B, V, h, w)."""
        if images.dim() == 5:
            batch, views = images.shape[:2]
            return self.tokens(images.flatten(0, 1)).unflatten(0, (batch, views))
        return self(images).argmax(dim=1)


class DVAEDecoder(nn.Module):
    """Code vectors (B, e, h, w) -> image (B, C, H, W), mirroring the encoder."""

    def __init__(self, config: DVAEConfig) -> None:
        super().__init__()
        top = config.stage_width(config.n_stages)
        layers: list[nn.Module] = [nn.Conv2d(config.embed_dim, top, 1), ResidualBlock(top)]
        for stage in reversed(range(config.n_stages)):
            wider, width = config.stage_width(stage + 1), config.stage_width(stage)
            # Nearest upsampling + conv rather than a transposed conv: no checkerboard artefacts.
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(wider, width, 3, padding=1)]
            layers.append(ResidualBlock(width))
        layers += [nn.ReLU(), nn.Conv2d(config.stage_width(0), config.in_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, codes: Tensor) -> Tensor:
        return self.net(codes)


class DVAE(nn.Module):
    """Encoder, codebook and decoder; see the module docstring for the loss."""

    def __init__(self, config: DVAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or DVAEConfig()
        self.encoder = DVAEEncoder(self.config)
        self.codebook = nn.Embedding(self.config.codebook_size, self.config.embed_dim)
        self.decoder = DVAEDecoder(self.config)

    def forward(
        self, images: Tensor, temperature: float = 1.0, *, hard: bool = False, kl_weight: float | None = None
    ) -> DVAEOutput:
        """Encode, relax, decode; ``kl_weight`` overrides the config's beta (for a warm-up ramp).

        In training mode the code is a Gumbel-softmax sample at ``temperature`` (straight-through
        one-hot when ``hard``); in eval mode it is the argmax one-hot, so reconstructions are
        deterministic and show what the tokens alone carry.
        """
        if temperature <= 0:
            raise ValueError(f"Gumbel-softmax temperature must be positive, got {temperature}")
        logits = self.encoder(images)
        if self.training:
            codes = functional.gumbel_softmax(logits, tau=temperature, hard=hard, dim=1)
        else:
            codes = functional.one_hot(logits.argmax(dim=1), self.config.codebook_size)
            codes = codes.permute(0, 3, 1, 2).to(logits.dtype)
        reconstruction = self.decoder(self.embed_codes(codes))
        beta = self.config.kl_weight if kl_weight is None else kl_weight
        losses = dvae_loss(images, reconstruction, logits, beta)
        return DVAEOutput(reconstruction, logits, losses)

    def embed_codes(self, codes: Tensor) -> Tensor:
        """Soft or hard one-hot codes (B, K, h, w) -> code vectors (B, e, h, w)."""
        return torch.einsum("bkhw,ke->behw", codes, self.codebook.weight)

    def tokens(self, images: Tensor) -> Tensor:
        """Argmax code ids (B, H/M, W/M), or (B, V, H/M, W/M) for (B, V, C, H, W) input."""
        return self.encoder.tokens(images)

    @torch.no_grad()
    def decode_tokens(self, token_ids: Tensor) -> Tensor:
        """Reconstruct images (B, C, H, W) from code ids (B, h, w): what the tokens alone carry."""
        _check_ids(token_ids, self.config.codebook_size)
        return self.decoder(self.codebook(token_ids.long()).permute(0, 3, 1, 2))

    def perplexity(self, token_ids: Tensor) -> float:
        """Codebook usage perplexity of ``token_ids`` (see :func:`code_perplexity`)."""
        return code_perplexity(token_ids, self.config.codebook_size)


def code_perplexity(token_ids: Tensor, codebook_size: int) -> float:
    """exp(entropy) of the code-usage histogram: 1 if one code is used, K if all are used evenly."""
    _check_ids(token_ids, codebook_size)
    counts = torch.bincount(token_ids.flatten().cpu(), minlength=codebook_size).double()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return float(entropy.exp())


def gumbel_temperature(step: int, total_steps: int, start: float = 1.0, end: float = 1.0 / 16) -> float:
    """Exponential decay from ``start`` (step 0) to ``end`` (step ``total_steps`` and after).

    DALL-E anneals tau from 1 to 1/16; geometric interpolation halves tau in equal step counts.
    """
    if start <= 0 or end <= 0:
        raise ValueError(f"temperatures must be positive, got start={start}, end={end}")
    if total_steps <= 0:
        return end
    fraction = min(max(step, 0) / total_steps, 1.0)
    return start * (end / start) ** fraction


def _check_images(images: Tensor, config: DVAEConfig) -> None:
    if images.dim() != 4 or images.shape[1] != config.in_channels:
        raise RRGError(
            f"the dVAE expects images shaped (batch, {config.in_channels}, height, width), "
            f"got {tuple(images.shape)}"
        )
    height, width = images.shape[-2:]
    if height % config.downsample or width % config.downsample:
        raise RRGError(
            f"image size {height}x{width} is not divisible by the dVAE downsampling {config.downsample}; "
            f"resize to {config.image_size}x{config.image_size}"
        )
    if not images.is_floating_point():
        raise RRGError(f"the dVAE expects float images, got {images.dtype}")


def _check_ids(token_ids: Tensor, codebook_size: int) -> None:
    if token_ids.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
        raise RRGError(f"code ids must be integers, got {token_ids.dtype}")
    if token_ids.numel() and (int(token_ids.min()) < 0 or int(token_ids.max()) >= codebook_size):
        raise RRGError(
            f"code ids must lie in [0, {codebook_size}), got {int(token_ids.min())}..{int(token_ids.max())}"
        )
