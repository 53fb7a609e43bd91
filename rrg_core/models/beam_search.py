"""Batched beam search over a step function, shared by DCRRG (beam 3, paper appendix A) and UAR.

The search knows nothing about the model: a step function maps the last tokens (B*beam,) and a
state to next-token log-probabilities (B*beam, V), a new state, and optionally an attention tensor
(B*beam, ...) describing how that step's prediction was made. After each step the state is reordered
to follow the surviving beams (:func:`reorder_state`), and so is the attention history, so the result
carries, for every generated token of the best sequence, the attention that produced it.

Finished beams stay in the beam and grow only by PAD at zero cost, so their score is fixed; the
search stops once every beam has emitted EOS or ``max_length`` tokens have been generated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

StepFn = Callable[[Tensor, Any], tuple[Tensor, Any, Tensor | None]]


@dataclass
class BeamResult:
    """Best sequence per batch item.

    ``tokens`` (B, T): generated tokens without BOS, EOS included where emitted, PAD after it.
    ``lengths`` (B,): tokens up to and including EOS. ``log_probs`` (B,): summed log-probabilities;
    ``scores`` (B,): the same divided by the length penalty (what the beams were ranked by).
    ``attention`` (B, T, ...): the step function's attention for each generated token, zero after EOS;
    None when the step function returns none.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    log_probs: Tensor
    attention: Tensor | None = None


def reorder_state(state: Any, index: Tensor) -> Any:
    """``index_select(0, index)`` on every tensor in a nested structure of lists, tuples, dicts and
    dataclasses; anything else (ints, None) is returned unchanged. Every tensor must be batch-first."""
    if isinstance(state, Tensor):
        return state.index_select(0, index)
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # NamedTuple: positional constructor
        return type(state)(*(reorder_state(s, index) for s in state))
    if isinstance(state, list | tuple):
        return type(state)(reorder_state(s, index) for s in state)
    if isinstance(state, dict):
        return {key: reorder_state(value, index) for key, value in state.items()}
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        changes = {f.name: reorder_state(getattr(state, f.name), index) for f in dataclasses.fields(state)}
        return dataclasses.replace(state, **changes)
    return state


def length_normaliser(lengths: Tensor, alpha: float) -> Tensor:
    """GNMT length penalty ``((5 + n) / 6) ** alpha``; alpha 0 (the default) ranks by raw log-prob."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


def banned_ngram_tokens(sequence: list[int], n: int) -> set[int]:
    """Tokens that would repeat an n-gram already in ``sequence`` (R2Gen-style repeated sentences)."""
    if n <= 0 or len(sequence) < n - 1:
        return set()
    context = tuple(sequence[len(sequence) - n + 1 :])
    return {
        sequence[i + n - 1] for i in range(len(sequence) - n + 1) if tuple(sequence[i : i + n - 1]) == context
    }


def _block_ngrams(log_probs: Tensor, tokens: Tensor, finished: Tensor, n: int) -> Tensor:
    """Set log-probs of tokens that would repeat an n-gram to -inf, per unfinished beam."""
    if n <= 0 or tokens.shape[1] < n - 1:
        return log_probs
    log_probs = log_probs.clone()
    for row, seq in enumerate(tokens.tolist()):
        if not finished[row]:
            banned = list(banned_ngram_tokens(seq, n))
            if banned:
                log_probs[row, banned] = float("-inf")
    return log_probs


def beam_search(
    step_fn: StepFn,
    *,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    beam_size: int = 3,
    max_length: int,
    length_penalty: float = 0.0,
    no_repeat_ngram_size: int = 0,
    device: torch.device | str = "cpu",
    init_state: Any,
    all_beams: bool = False,
) -> BeamResult:
    """Beam search for ``batch_size`` items; ``init_state`` is batch-first with ``batch_size`` rows
    and is expanded to ``batch_size * beam_size`` rows here (beam-major within each item).

    ``length_penalty`` is the GNMT alpha (0: rank by summed log-prob, as R2Gen-style decoders do).
    ``no_repeat_ngram_size`` n > 0 forbids any n-gram from occurring twice in a sequence (3 is the usual
    fix for repeated sentences); it is off by default so that results are the model's own. PAD and BOS
    are never generated. With ``beam_size`` 1 the search is exactly greedy decoding (argmax over the
    tokens other than PAD and BOS). ``all_beams`` returns every item's final beams instead of its
    best one: each field of the result then has a beam axis after the batch axis, best beam first.
    """
    n_rows = batch_size * beam_size
    rows = torch.arange(batch_size, device=device).repeat_interleave(beam_size)
    state = reorder_state(init_state, rows)
    # Only beam 0 is live at the start; the others would duplicate it.
    sum_logp = torch.full((batch_size, beam_size), float("-inf"), device=device)
    sum_logp[:, 0] = 0.0
    tokens = torch.empty(n_rows, 0, dtype=torch.long, device=device)
    lengths = torch.zeros(n_rows, dtype=torch.long, device=device)
    finished = torch.zeros(n_rows, dtype=torch.bool, device=device)
    last = torch.full((n_rows,), bos_id, dtype=torch.long, device=device)
    attention: Tensor | None = None
    for _ in range(max_length):
        log_probs, state, step_attn = step_fn(last, state)
        log_probs = _block_ngrams(log_probs.float(), tokens, finished, no_repeat_ngram_size)
        # PAD and BOS are never generated: PAD marks "after EOS" in the result, BOS only starts it.
        never = torch.tensor([pad_id, bos_id], device=log_probs.device)
        log_probs = log_probs.index_fill(1, never, float("-inf"))  # out of place: step_fn owns its output
        # A finished beam can only append PAD, at no cost, so its score stays what it was.
        log_probs = torch.where(finished[:, None], _pad_only(log_probs, pad_id), log_probs)
        vocab = log_probs.shape[-1]
        candidates = sum_logp.view(n_rows, 1) + log_probs
        new_lengths = (lengths + (~finished).long())[:, None].expand(-1, vocab)
        rank = (candidates / length_normaliser(new_lengths, length_penalty)).view(batch_size, -1)
        top = rank.topk(beam_size, dim=1).indices  # (B, beam) over beam * vocab
        parent = (top // vocab + torch.arange(batch_size, device=device)[:, None] * beam_size).view(-1)
        chosen = (top % vocab).view(-1)
        sum_logp = candidates.view(-1)[parent * vocab + chosen].view(batch_size, beam_size)
        was_finished = finished[parent]
        state = reorder_state(state, parent)
        tokens = torch.cat([tokens[parent], chosen[:, None]], dim=1)
        lengths = lengths[parent] + (~was_finished).long()
        finished = was_finished | (chosen == eos_id)
        if step_attn is not None:
            attention = _append_attention(attention, step_attn, parent, was_finished)
        last = chosen
        if bool(finished.all()):
            break
    ranked = _ranked(tokens, lengths, sum_logp, length_penalty, attention, batch_size, beam_size)
    return ranked if all_beams else select_beams(ranked, torch.zeros(batch_size, dtype=torch.long))


def _pad_only(log_probs: Tensor, pad_id: int) -> Tensor:
    """Log-probs that allow only PAD, at log-prob 0."""
    out = torch.full_like(log_probs, float("-inf"))
    out[:, pad_id] = 0.0
    return out


def _append_attention(history: Tensor | None, step: Tensor, parent: Tensor, was_finished: Tensor) -> Tensor:
    """Follow the surviving beams and add this step's attention; steps after EOS get zeros.

    The attention came with the log-probs of the step, i.e. from the parent beam, so it is selected by
    ``parent`` just like the history.
    """
    step = step.index_select(0, parent)
    step = step.masked_fill(was_finished.view(-1, *[1] * (step.dim() - 1)), 0.0).unsqueeze(1)
    if history is None:
        return step
    return torch.cat([history.index_select(0, parent), step], dim=1)


def _ranked(
    tokens: Tensor,
    lengths: Tensor,
    sum_logp: Tensor,
    length_penalty: float,
    attention: Tensor | None,
    batch_size: int,
    beam_size: int,
) -> BeamResult:
    """Each item's beams (B, beam, ...) sorted best first, trailing all-PAD columns trimmed."""
    scores = sum_logp / length_normaliser(lengths.view(batch_size, beam_size), length_penalty)
    order = scores.argsort(dim=1, descending=True, stable=True)
    rows = (order + torch.arange(batch_size, device=tokens.device)[:, None] * beam_size).view(-1)
    sorted_lengths = lengths[rows].view(batch_size, beam_size)
    width = int(sorted_lengths.max()) if batch_size else 0
    return BeamResult(
        tokens=tokens[rows, :width].view(batch_size, beam_size, -1),
        lengths=sorted_lengths,
        scores=scores.gather(1, order),
        log_probs=sum_logp.gather(1, order),
        attention=None
        if attention is None
        else attention[rows, :width].unflatten(0, (batch_size, beam_size)),
    )


def select_beams(ranked: BeamResult, picks: Tensor) -> BeamResult:
    """From ``all_beams`` results (B, beam, ...), beam ``picks[b]`` (B,) of each item, trailing
    all-PAD columns trimmed: the shape ``beam_search`` returns by default."""
    index = torch.arange(len(picks), device=ranked.lengths.device), picks.to(ranked.lengths.device)
    width = int(ranked.lengths[index].max()) if len(picks) else 0
    return BeamResult(
        tokens=ranked.tokens[index][:, :width],
        lengths=ranked.lengths[index],
        scores=ranked.scores[index],
        log_probs=ranked.log_probs[index],
        attention=None if ranked.attention is None else ranked.attention[index][:, :width],
    )
