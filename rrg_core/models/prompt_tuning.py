"""P-Tuning v2 deep prompts for the shared decoder, and helpers to freeze all but them.

DCRRG Step 4 tunes trainable prefix keys/values in every decoder layer plus a new output
head, with encoders and decoder frozen; these pieces do that and report the trainable share.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from rrg_core.models.decoder import DecoderConfig, Prefixes

logger = logging.getLogger(__name__)


class DeepPrompts(nn.Module):
    """P-Tuning v2 deep prompts: ``n_prefix`` trainable key/value vectors in every decoder layer.

    Directly parameterised by default. With ``hidden`` set, a two-layer MLP maps ``n_prefix``
    d-dimensional embeddings to every layer's keys and values, the reparameterisation P-Tuning v2
    offers as an option (it helps on some tasks, hurts on others). Call it with the batch size to get
    the ``prefixes`` argument of :class:`TransformerDecoder`: one (k, v) pair per layer, each (B, P, d).
    """

    def __init__(
        self, n_layers: int, d_model: int, n_prefix: int, hidden: int | None = None, init_std: float = 1.0
    ) -> None:
        super().__init__()
        self.n_layers, self.d_model, self.n_prefix = n_layers, d_model, n_prefix
        out_dim = n_layers * 2 * d_model
        # std 1 matches the nn.Embedding initialisation P-Tuning v2 uses for its prefix table.
        width = d_model if hidden is not None else out_dim
        self.prefix = nn.Parameter(torch.randn(n_prefix, width) * init_std)
        self.mlp = (
            None
            if hidden is None
            else nn.Sequential(nn.Linear(d_model, hidden), nn.Tanh(), nn.Linear(hidden, out_dim))
        )

    @classmethod
    def for_decoder(cls, config: DecoderConfig, n_prefix: int, hidden: int | None = None) -> DeepPrompts:
        """Prompts sized for a decoder built from ``config``."""
        return cls(config.n_layers, config.d_model, n_prefix, hidden)

    def forward(self, batch_size: int) -> Prefixes:
        """Per-layer (k, v), each (batch_size, n_prefix, d_model); expanded, not copied."""
        flat = self.prefix if self.mlp is None else self.mlp(self.prefix)
        per_layer = flat.view(self.n_prefix, self.n_layers, 2, self.d_model).permute(1, 2, 0, 3)
        return [
            (per_layer[i, 0].expand(batch_size, -1, -1), per_layer[i, 1].expand(batch_size, -1, -1))
            for i in range(self.n_layers)
        ]


PrefixEncoder = DeepPrompts  # the name P-Tuning v2's code uses for the same module


def freeze_all_but(module: nn.Module, trainable: Iterable[nn.Module]) -> None:
    """Freeze every parameter of ``module``, then unfreeze those of the ``trainable`` modules
    (DCRRG Step 4: deep prompts and the new head train, the pretrained decoder stays fixed)."""
    module.requires_grad_(False)
    for part in trainable:
        part.requires_grad_(True)
    n_train, n_total, share = trainable_parameter_share(module)
    logger.info("trainable parameters: %d of %d (%.2f%%)", n_train, n_total, 100 * share)


def trainable_parameter_share(model: nn.Module) -> tuple[int, int, float]:
    """(trainable, total, trainable / total) parameter counts, shared tensors counted once."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return trainable, total, trainable / total if total else 0.0
