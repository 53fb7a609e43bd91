"""Temperature sampling over a step function: several alternative reports per study.

The same step functions as :func:`~rrg_core.models.beam_search.beam_search` (last tokens and a state
-> next-token log-probabilities, a new state, an optional attention). Each study's state is repeated
``samples`` times and every row draws its next token from ``softmax(log_probs / temperature)``; a row
that emitted EOS appends only PAD. A seeded ``torch.Generator`` makes the draws repeatable, so the
same study gets the same alternatives (and the same sentence support) on every call.

What the alternatives are for: a claim that the model makes in its best draft but not consistently
in samples is weakly supported (RadFlag, arXiv 2411.00299; :mod:`rrg_core.support`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rrg_core.models.beam_search import StepFn, reorder_state


def sample_sequences(
    step_fn: StepFn,
    *,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    samples: int,
    temperature: float,
    max_length: int,
    device: torch.device | str,
    init_state: Any,
    generator: torch.Generator | None = None,
) -> list[list[list[int]]]:
    """``samples`` sampled token-id sequences (no BOS; EOS last unless cut at ``max_length``) per study.

    ``init_state`` is batch-first with ``batch_size`` rows; it is repeated here (study-major). PAD and
    BOS are never drawn.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if not temperature > 0:
        raise ValueError(f"the sampling temperature must be positive, got {temperature}")
    n_rows = batch_size * samples
    rows = torch.arange(batch_size, device=device).repeat_interleave(samples)
    state = reorder_state(init_state, rows)
    last = torch.full((n_rows,), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(n_rows, dtype=torch.bool, device=device)
    steps: list[Tensor] = []
    never = torch.tensor([pad_id, bos_id], device=device)
    for _ in range(max_length):
        log_probs, state, _attention = step_fn(last, state)
        logits = log_probs.float().index_fill(1, never, float("-inf")) / temperature
        chosen = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)
        chosen = torch.where(finished, torch.full_like(chosen, pad_id), chosen)
        steps.append(chosen)
        finished = finished | (chosen == eos_id)
        last = chosen
        if bool(finished.all()):
            break
    if not steps:
        return [[[] for _ in range(samples)] for _ in range(batch_size)]
    tokens = torch.stack(steps, dim=1).tolist()
    out: list[list[int]] = []
    for row in tokens:
        end = row.index(eos_id) + 1 if eos_id in row else len(row)
        out.append(row[:end])
    return [out[b * samples : (b + 1) * samples] for b in range(batch_size)]
