"""Do the dVAE's tokens keep the findings? A small classifier read out from the token grids.

Reconstruction error and code perplexity say how well a dVAE redraws an image, not whether the few
pixels of a nodule or a blunted costophrenic angle survive as distinct codes, which is all UAR can
learn from. This probe answers that directly: a small network over the frozen token ids of each
study's views (a fresh code embedding, two 3x3 convolutions, max and mean pooling per view) is
trained for a few epochs to predict the 14 observations of the training reports, and its mean
AUROC on the validation split is reported (``val_findings_auroc``).

The figure is a lower bound on what the tokens hold (a stronger or longer-trained read-out may do
better) and is read at the last epoch, never the best one, so it is not tuned on the split it
reports. Compare it with DCRRG's Step-1 AUROC on the same data, which reads the images themselves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from rrg_core.metrics.ranking import auroc_per_observation
from rrg_core.observations import OBSERVATIONS

DEFAULT_SETTINGS: dict[str, Any] = {"epochs": 5, "batch_size": 32, "lr": 2e-3, "width": 32}


class TokenProbe(nn.Module):
    """Token ids (B, V, h, w) -> observation logits (B, 14)."""

    def __init__(self, codebook_size: int, views: int, width: int = 32) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, width)
        self.convs = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        )  # fmt: skip
        # max pooling finds a small finding anywhere; mean pooling measures a large one (heart size)
        self.head = nn.Linear(views * 4 * width, len(OBSERVATIONS))

    def forward(self, tokens: Tensor) -> Tensor:
        batch = tokens.shape[0]
        grids = self.embedding(tokens.flatten(0, 1)).permute(0, 3, 1, 2)  # (B * V, width, h, w)
        maps = self.convs(grids)
        pooled = torch.cat([maps.amax(dim=(2, 3)), maps.mean(dim=(2, 3))], dim=1)
        return self.head(pooled.reshape(batch, -1))


def probe_tokens(
    train_tokens: Tensor,
    train_labels: Tensor,
    val_tokens: Tensor,
    val_labels: Tensor,
    codebook_size: int,
    settings: dict[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a :class:`TokenProbe` on (N, V, h, w) token ids with bool (N, 14) labels; validate.

    Returns ``val_findings_auroc`` (mean over the observations with both classes in the validation
    split, None when none), its ``per_observation`` values and the settings used; an empty dict when
    either split is empty.
    """
    if len(train_tokens) == 0 or len(val_tokens) == 0:
        return {}
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probe = TokenProbe(codebook_size, train_tokens.shape[1], int(settings["width"]))
    optimizer = torch.optim.AdamW(probe.parameters(), lr=float(settings["lr"]), weight_decay=0.01)
    targets = train_labels.float()
    batch = int(settings["batch_size"])
    probe.train()
    for _ in range(int(settings["epochs"])):
        order = torch.randperm(len(train_tokens), generator=generator)
        for start in range(0, len(order), batch):
            index = order[start : start + batch]
            loss = functional.binary_cross_entropy_with_logits(probe(train_tokens[index]), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    probe.eval()
    with torch.no_grad():
        scores = torch.cat([probe(val_tokens[i : i + 256]) for i in range(0, len(val_tokens), 256)])
    summary = auroc_per_observation(val_labels.float(), scores.sigmoid())
    return {
        "val_findings_auroc": summary.mean_or_none,
        "per_observation": summary.per_observation_or_none(),
        "settings": settings,
    }
