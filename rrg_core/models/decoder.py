"""Transformer report decoder shared by DCRRG and UAR.

DCRRG (sec. 3.3, eqs 10-12) uses 2 post-LN layers: masked self-attention, cross-attention to the
image (or text) representation, feed-forward, each followed by "Add & Norm"; Step 4 (sec. 3.4)
freezes the decoder and trains P-Tuning v2 deep prompts plus a new output head. UAR (sec. 3.4, TIR)
uses 3 layers (d 512, 8 heads) whose text-to-image attention gets an additive learnable-mask term and
whose per-token attention maps are shown as heatmaps. Attention is written out by hand so that the
bias, the prefixes, the returned weights and the key/value cache are all visible in one place.

Conventions: boolean masks are True where attention is allowed (``memory_mask`` True on real memory
rows, like ``report_mask`` in :mod:`rrg_core.data.datasets`). Target tokens are right-padded, so the
causal mask alone keeps real positions from seeing padding; no target padding mask is needed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

Prefixes = list[tuple[Tensor, Tensor]]
StepFn = Callable[[Tensor, "DecoderCache"], tuple[Tensor, "DecoderCache", Tensor | None]]


@dataclass
class DecoderConfig:
    """Sizes of a :class:`TransformerDecoder`; defaults are UAR's (3 layers, d 512, 8 heads)."""

    vocab_size: int
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 3
    d_ff: int = 2048
    dropout: float = 0.1
    max_length: int = 100
    post_norm: bool = True
    pad_id: int = 0

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")


@dataclass
class DecoderOutput:
    """Logits (B, T, V); cross-attention (n_layers, B, heads, T, L), or (n_layers, B, T, L) when
    averaged over heads, or None when not asked for."""

    logits: Tensor
    cross_attention: Tensor | None = None


@dataclass
class DecoderCache:
    """Incremental-decoding state. Every tensor has the batch on dim 0, so a beam search can reorder
    the whole cache with one ``index_select`` per tensor (see ``beam_search.reorder_state``)."""

    self_k: list[Tensor]  # per layer (B, heads, P + position, d_head): prefixes then past tokens
    self_v: list[Tensor]
    cross_k: list[Tensor]  # per layer (B, heads, L, d_head): memory projected once per sequence
    cross_v: list[Tensor]
    memory_mask: Tensor | None  # (B, L) bool, True on real memory rows
    cross_bias: Tensor | None  # (B, heads or 1, T_bias, L), added to the cross-attention logits
    n_prefix: int
    position: int = 0  # tokens decoded so far
    input_offset: Tensor | None = None  # (B, d) added to every input embedding (a per-sequence prompt)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention with an optional additive logit bias.

    The logits are ``q k^T / sqrt(d_head) + bias``, masked, then softmaxed. UAR eq. 11 reads
    ``A = (q k^T + k * sigmoid(M)) / sqrt(d)``: its mask term sits *inside* the division. This layer
    adds ``bias`` *after* the scaling, so the literal eq. 11 is obtained by passing
    ``bias = k * sigmoid(M) / sqrt(d_head)`` (see :func:`eq11_bias`); a caller that prefers the
    unscaled ``k * sigmoid(M)`` passes that instead. Either way the bias is pre-softmax and additive.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.q_proj, self.k_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.v_proj, self.out_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, T, d) -> (B, heads, T, d_head)."""
        return x.unflatten(-1, (self.n_heads, self.d_head)).transpose(1, 2)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``x`` (B, S, d), split into heads."""
        return self.split_heads(self.k_proj(x)), self.split_heads(self.v_proj(x))

    def attend(
        self, query: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, bias: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend from ``query`` (B, T, d) to head-split ``k``/``v`` (B, heads, S, d_head).

        ``mask`` (bool, True = may attend) and ``bias`` broadcast to (B, heads, T, S). Returns the
        output (B, T, d) and the softmax weights (B, heads, T, S) before dropout.
        """
        q = self.split_heads(self.q_proj(query))
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        if bias is not None:
            logits = logits + bias
        if mask is not None:
            # The dtype's minimum rather than -inf: a row with nothing to attend to becomes uniform
            # instead of NaN, and masked entries still get exactly zero weight otherwise.
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        weights = logits.softmax(dim=-1)
        out = (self.dropout(weights) @ v).transpose(1, 2).flatten(-2)
        return self.out_proj(out), weights


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention, feed-forward; post-LN (DCRRG eqs 10-12) or pre-LN."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d, p = config.d_model, config.dropout
        self.post_norm = config.post_norm
        self.self_attn = MultiHeadAttention(d, config.n_heads, p)
        self.cross_attn = MultiHeadAttention(d, config.n_heads, p)
        self.ffn = nn.Sequential(
            nn.Linear(d, config.d_ff), nn.ReLU(), nn.Dropout(p), nn.Linear(config.d_ff, d)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(3))
        self.dropout = nn.Dropout(p)

    def _pre(self, x: Tensor, index: int) -> Tensor:
        """Sub-layer input: the residual stream itself (post-LN) or its LayerNorm (pre-LN)."""
        return x if self.post_norm else self.norms[index](x)

    def _post(self, x: Tensor, y: Tensor, index: int) -> Tensor:
        """Add & Norm (post-LN, DCRRG eqs 10-12) or a plain residual add (pre-LN)."""
        x = x + self.dropout(y)
        return self.norms[index](x) if self.post_norm else x

    def forward(
        self,
        x: Tensor,
        self_kv: tuple[Tensor, Tensor],
        self_mask: Tensor,
        cross_kv: tuple[Tensor, Tensor],
        cross_mask: Tensor | None,
        cross_bias: Tensor | None,
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """One layer on new tokens ``x`` (B, T, d) given the cached self keys/values (prefixes and
        earlier tokens). Returns the output, cross-attention weights and the extended self k/v."""
        h = self._pre(x, 0)
        k_new, v_new = self.self_attn.project_kv(h)
        k, v = torch.cat([self_kv[0], k_new], dim=2), torch.cat([self_kv[1], v_new], dim=2)
        x = self._post(x, self.self_attn.attend(h, k, v, self_mask)[0], 0)
        out, weights = self.cross_attn.attend(self._pre(x, 1), *cross_kv, cross_mask, cross_bias)
        x = self._post(x, out, 1)
        x = self._post(x, self.ffn(self._pre(x, 2)), 2)
        return x, weights, (k, v)


class TransformerDecoder(nn.Module):
    """Token + learned positional embeddings, ``n_layers`` :class:`DecoderLayer`, a linear head."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        # Optional map of token embeddings (B, T, d) -> (B, T, d), applied before positions are added
        # (UAR passes its CRA there, eq 2). It must treat positions independently, since incremental
        # decoding feeds it one token at a time. A module assigned here is registered (and saved) as
        # part of the decoder; a plain function or another module's bound method is not.
        self.token_transform: Callable[[Tensor], Tensor] | None = None
        self.position_embedding = nn.Embedding(config.max_length, config.d_model)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_layers))
        # Pre-LN leaves the residual stream un-normalised, so it needs one LayerNorm at the end.
        self.final_norm = nn.Identity() if config.post_norm else nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size)

    def replace_head(self, vocab_size: int | None = None) -> nn.Linear:
        """A fresh, randomly initialised output head (DCRRG Step 4); returns it for the optimiser."""
        device = self.head.weight.device
        self.head = nn.Linear(self.config.d_model, vocab_size or self.config.vocab_size).to(device)
        return self.head

    def init_cache(
        self,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        cross_bias: Tensor | None = None,
        prefixes: Prefixes | None = None,
        input_offset: Tensor | None = None,
    ) -> DecoderCache:
        """Project the memory (B, L, d) once per layer and seed the self-attention cache with prefixes.

        ``prefixes`` holds one (k, v) pair per layer, each (B, P, d): already-projected keys/values
        (P-Tuning v2's ``past_key_values``), so they bypass the layer's k/v projections.
        ``input_offset`` (B, d) is added to every token's input embedding: a conditioning vector the
        first layer's queries already see (DCRRG's observation prompt), unlike one in the memory only.
        ``cross_bias`` broadcasts to (B, heads, T_bias, L); with T_bias > 1 row ``t`` is used for the
        token at position ``t`` (UAR's T x L mask), with T_bias == 1 it applies to every position.
        """
        batch = memory.shape[0]
        if prefixes is not None and len(prefixes) != len(self.layers):
            raise ValueError(f"need one prefix pair per layer ({len(self.layers)}), got {len(prefixes)}")
        self_k, self_v, cross_k, cross_v = [], [], [], []
        for i, layer in enumerate(self.layers):
            k, v = layer.cross_attn.project_kv(memory)
            cross_k.append(k)
            cross_v.append(v)
            if prefixes is None:
                empty = k.new_zeros(batch, layer.self_attn.n_heads, 0, layer.self_attn.d_head)
                self_k.append(empty)
                self_v.append(empty)
            else:
                self_k.append(layer.self_attn.split_heads(prefixes[i][0].expand(batch, -1, -1)))
                self_v.append(layer.self_attn.split_heads(prefixes[i][1].expand(batch, -1, -1)))
        if cross_bias is not None:
            while cross_bias.dim() < 4:
                cross_bias = cross_bias.unsqueeze(0)
            cross_bias = cross_bias.expand(batch, -1, -1, -1)
        n_prefix = self_k[0].shape[2] if self_k else 0
        if input_offset is not None and input_offset.shape != (batch, self.config.d_model):
            raise ValueError(
                f"input_offset must be ({batch}, {self.config.d_model}), got {tuple(input_offset.shape)}"
            )
        return DecoderCache(
            self_k, self_v, cross_k, cross_v, memory_mask, cross_bias, n_prefix, input_offset=input_offset
        )

    def forward(
        self,
        tokens: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        cross_bias: Tensor | None = None,
        prefixes: Prefixes | None = None,
        return_attention: bool = False,
        average_heads: bool = False,
        input_offset: Tensor | None = None,
    ) -> DecoderOutput:
        """Teacher-forced pass over ``tokens`` (B, T): the same code path as :meth:`step`, from an
        empty cache, so incremental and full decoding cannot drift apart."""
        cache = self.init_cache(memory, memory_mask, cross_bias, prefixes, input_offset)
        return self.step(tokens, cache, return_attention, average_heads)[0]

    def step(
        self, tokens: Tensor, cache: DecoderCache, return_attention: bool = False, average_heads: bool = False
    ) -> tuple[DecoderOutput, DecoderCache]:
        """Decode new tokens (B,) or (B, T_new) after ``cache.position`` earlier ones.

        Returns logits for the new positions only and a new cache holding their keys/values.
        """
        if tokens.dim() == 1:
            tokens = tokens.unsqueeze(1)
        start, t_new = cache.position, tokens.shape[1]
        if start + t_new > self.config.max_length:
            raise ValueError(f"position {start + t_new} exceeds max_length {self.config.max_length}")
        positions = torch.arange(start, start + t_new, device=tokens.device)
        embedded = self.token_embedding(tokens)
        if self.token_transform is not None:
            embedded = self.token_transform(embedded)
        embedded = embedded + self.position_embedding(positions)
        if cache.input_offset is not None:
            embedded = embedded + cache.input_offset[:, None, :].to(embedded.dtype)
        x = self.embed_dropout(embedded)
        self_mask = _causal_mask(cache.n_prefix, start, t_new, tokens.device)
        cross_mask = None if cache.memory_mask is None else cache.memory_mask[:, None, None, :].bool()
        bias = _bias_rows(cache.cross_bias, start, t_new)
        new_k, new_v, attentions = [], [], []
        for i, layer in enumerate(self.layers):
            kv_in, cross_kv = (cache.self_k[i], cache.self_v[i]), (cache.cross_k[i], cache.cross_v[i])
            x, weights, (k, v) = layer(x, kv_in, self_mask, cross_kv, cross_mask, bias)
            new_k.append(k)
            new_v.append(v)
            attentions.append(weights.mean(dim=1) if average_heads else weights)
        logits = self.head(self.final_norm(x))
        attention = torch.stack(attentions) if return_attention else None
        new_cache = DecoderCache(
            new_k, new_v, cache.cross_k, cache.cross_v, cache.memory_mask, cache.cross_bias,
            cache.n_prefix, start + t_new, cache.input_offset,
        )  # fmt: skip
        return DecoderOutput(logits, attention), new_cache

    def beam_step_fn(self, return_attention: bool = False, average_heads: bool = False) -> StepFn:
        """A step function for :func:`rrg_core.models.beam_search.beam_search`.

        It returns log-probabilities (B, V) of the next token and, when asked, the cross-attention
        that produced them as (B, n_layers, heads, L), or (B, n_layers, L) averaged over heads.
        """

        def step_fn(last: Tensor, cache: DecoderCache) -> tuple[Tensor, DecoderCache, Tensor | None]:
            out, cache = self.step(last, cache, return_attention, average_heads)
            log_probs = out.logits[:, -1].log_softmax(dim=-1)
            attn = None if out.cross_attention is None else out.cross_attention[..., -1, :].movedim(1, 0)
            return log_probs, cache, attn

        return step_fn


def _causal_mask(n_prefix: int, start: int, t_new: int, device: torch.device) -> Tensor:
    """(T_new, P + start + T_new) bool: every query sees all prefixes and tokens up to itself."""
    query_pos = torch.arange(start, start + t_new, device=device)[:, None]
    key_pos = torch.arange(-n_prefix, start + t_new, device=device)[None, :]
    return key_pos <= query_pos  # prefixes have negative positions, so they are always visible


def _bias_rows(bias: Tensor | None, start: int, t_new: int) -> Tensor | None:
    """The rows of a (B, h, T_bias, L) cross-attention bias that belong to positions start..start+t_new."""
    if bias is None or bias.shape[-2] == 1:
        return bias
    if bias.shape[-2] < start + t_new:
        raise ValueError(f"cross_bias has {bias.shape[-2]} rows, need {start + t_new}")
    return bias[:, :, start : start + t_new]


def eq11_bias(mask_logits: Tensor, k: float, d_head: int) -> Tensor:
    """UAR eq. 11's mask term in this decoder's convention: ``k * sigmoid(M) / sqrt(d_head)``.

    The paper divides the sum ``q k^T + k sigmoid(M)`` by sqrt(d); :class:`MultiHeadAttention`
    scales ``q k^T`` itself and adds the bias afterwards, so the bias carries its own 1/sqrt(d_head).
    """
    return k * torch.sigmoid(mask_logits) / math.sqrt(d_head)
