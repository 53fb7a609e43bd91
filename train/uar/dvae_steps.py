"""The dVAE of UAR's LSU: training (temperature and KL schedules), validation, reconstructions, tokens.

Training follows DALL-E's recipe in miniature: Gumbel-softmax relaxation whose temperature decays
exponentially from ``temperature_start`` to ``temperature_end`` over the first ``anneal`` share of the
iterations, and a KL weight that ramps linearly from 0 to ``kl_weight`` over the first ``kl_warmup``
share (codes first learn to reconstruct, then to spread). Validation uses the argmax codes (eval
mode), i.e. what UAR will see: reconstruction MSE on the normalised image, and the perplexity of
code usage over all validation tokens (1: one code for everything; the codebook size: all used
evenly).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional
from torchvision.utils import save_image

from rrg_core.models.uar.dvae import DVAE, code_perplexity, gumbel_temperature
from train.common.harness import Harness, Stage, Terms, iterations
from train.common.runner import index_batches
from train.uar.data import MEAN, STD, ImageSettings
from train.uar.presets import DVAETraining

logger = logging.getLogger(__name__)

RECONSTRUCTIONS_DIR = "reconstructions"
MIN_PNG_SIDE = 128  # reconstructions of smaller inputs are enlarged (nearest neighbour) to this height


def train_dvae(
    dvae: DVAE, views: Tensor, image: ImageSettings, settings: DVAETraining, ctx: Harness
) -> tuple[Stage, float]:
    """The dVAE's stage on single views, uint8 (K, S, S) (random crops of ``image.size`` when S is
    larger), and the temperature it ends at."""
    dvae.train()
    total, _ = iterations(settings, len(views), ctx.info)
    anneal_steps = round(settings.anneal * total)
    warmup_steps = round(settings.kl_warmup * total)
    terms = Terms()
    crops = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,), generator=ctx.generator)))

    def batches():
        for index in index_batches(len(views), settings.batch_size, ctx.generator, ctx.info):
            yield image.to_input(views[index].unsqueeze(1), ctx.device, crops).squeeze(1)

    def loss_fn(model: nn.Module, batch: Tensor) -> Tensor:
        step = terms.calls
        terms.calls += 1
        temperature = gumbel_temperature(
            step, anneal_steps, settings.temperature_start, settings.temperature_end
        )
        beta = (
            dvae.config.kl_weight * min(1.0, step / warmup_steps) if warmup_steps else dvae.config.kl_weight
        )
        out = model(batch, temperature, kl_weight=beta)
        terms.add(reconstruction=out.losses.reconstruction.detach(), kl=out.losses.kl.detach())
        return out.losses.total

    final = gumbel_temperature(total, anneal_steps, settings.temperature_start, settings.temperature_end)
    return Stage(settings, dvae, loss_fn, batches(), len(views), terms=terms), final


@torch.no_grad()
def evaluate_dvae(
    dvae: DVAE, views: Tensor, image: ImageSettings, device: torch.device, keep: int = 8, batch: int = 64
) -> tuple[dict[str, Any], Tensor, Tensor]:
    """Validation metrics on single views uint8 (K, size, size), plus the first ``keep`` originals and
    reconstructions (normalised, (keep, C, H, W)) for :func:`save_reconstructions`."""
    dvae.eval()
    errors, tokens, originals, reconstructions = [], [], [], []
    for start in range(0, len(views), batch):
        x = image.to_input(views[start : start + batch].unsqueeze(1), device).squeeze(1)
        out = dvae(x)
        errors.append(((out.reconstruction.float() - x) ** 2).mean(dim=(1, 2, 3)).cpu())
        tokens.append(out.logits.argmax(dim=1).cpu())
        if sum(len(o) for o in originals) < keep:
            originals.append(x.cpu())
            reconstructions.append(out.reconstruction.float().cpu())
    if not errors:
        return {}, torch.empty(0), torch.empty(0)
    ids = torch.cat(tokens)
    metrics = {
        "val_reconstruction_mse": float(torch.cat(errors).mean()),
        "val_perplexity": code_perplexity(ids, dvae.config.codebook_size),
        "val_codes_used": int(ids.unique().numel()),
        "codebook_size": dvae.config.codebook_size,
    }
    return metrics, torch.cat(originals)[:keep], torch.cat(reconstructions)[:keep]


def save_reconstructions(folder: Path, originals: Tensor, reconstructions: Tensor) -> list[Path]:
    """One PNG per view, original | reconstruction side by side, in ``folder/reconstructions/``."""
    out = folder / RECONSTRUCTIONS_DIR
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (original, reconstruction) in enumerate(zip(originals, reconstructions, strict=True)):
        pair = torch.cat([original, reconstruction], dim=-1) * STD + MEAN  # back to [0, 1]
        scale = max(1, math.ceil(MIN_PNG_SIDE / pair.shape[-2]))  # small inputs are hard to judge
        pair = functional.interpolate(pair.unsqueeze(0), scale_factor=scale, mode="nearest")[0]
        path = out / f"reconstruction_{index:02d}.png"
        save_image(pair.clamp(0, 1), path)
        written.append(path)
    return written
