"""What UAR's decoding hands back and how a draft is picked: the decoder's inputs besides the words,
the generation result, the beam chooser of ``consistent_beams`` and the heatmaps over the visual cells.

Kept apart from :mod:`rrg_core.models.uar.model` so that the network's file holds the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rrg_core.models.beam_search import BeamResult, select_beams


@dataclass
class DecoderInputs:
    """What the decoder reads besides the words (:meth:`UAR.decoder_inputs`): ``memory`` (B, M, d),
    ``cross_bias`` (T, M) or None, ``offset`` (B, d) or None."""

    memory: Tensor
    cross_bias: Tensor | None
    offset: Tensor | None


@dataclass
class UARGeneration:
    """Beam-search output for B studies.

    ``tokens[b]``: generated ids, no BOS, EOS last unless cut at the length limit.
    ``attention[b]``: (len(tokens[b]), V, h, w), the text-to-image attention that produced each token,
    averaged over heads and decoder layers (or one layer); each token's map sums to 1 over all views'
    cells together. ``scores`` (B,): the beams' ranking scores.
    """

    tokens: list[list[int]]
    attention: list[Tensor]
    scores: Tensor


#: Picks a study's draft among its beams: (its labels (14,) or None, the beams' token ids) -> index.
Chooser = Callable[[Tensor | None, list[list[int]]], int]


def chosen_beams(ranked: BeamResult, states: Tensor | None, choose: Chooser) -> BeamResult:
    """From ``beam_search(..., all_beams=True)``'s result, the beam ``choose`` picks for each study."""
    picks = []
    for b, (rows, lengths) in enumerate(zip(ranked.tokens.tolist(), ranked.lengths.tolist(), strict=True)):
        candidates = [row[:n] for row, n in zip(rows, lengths, strict=True)]
        picks.append(choose(None if states is None else states[b], candidates))
    return select_beams(ranked, torch.tensor(picks, dtype=torch.long))


def visual_maps(attention: Tensor, layer: int | None, grid: tuple[int, int, int]) -> Tensor:
    """(B, T, n_layers, memory) -> (B, T, V, h, w): the mean over decoder layers, or one layer, over
    the visual cells; with label rows in the memory, renormalised over the cells alone."""
    if layer is not None and not -attention.shape[2] <= layer < attention.shape[2]:
        raise ValueError(f"attention_layer {layer} out of range for {attention.shape[2]} decoder layers")
    maps = attention.mean(dim=2) if layer is None else attention[:, :, layer]
    cells = grid[0] * grid[1] * grid[2]
    if maps.shape[-1] > cells:
        maps = maps[..., :cells]
        maps = maps / maps.sum(dim=-1, keepdim=True).clamp(min=1e-12)
    return maps.unflatten(-1, grid)
