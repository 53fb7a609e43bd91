"""Beam search: greedy equivalence, known best sequences, EOS and length handling, attention along beams."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch

from rrg_core.models.beam_search import banned_ngram_tokens, beam_search, reorder_state
from rrg_core.models.decoder import DecoderConfig, TransformerDecoder

PAD, BOS, EOS, A, B_, C = 0, 1, 2, 3, 4, 5
V = 6


def chain(rows: dict[int, dict[int, float]]) -> torch.Tensor:
    """A (V, V) log-transition matrix; unlisted moves get a tiny probability."""
    probs = torch.full((V, V), 1e-6)
    for src, moves in rows.items():
        for dst, p in moves.items():
            probs[src, dst] = p
    return (probs / probs.sum(-1, keepdim=True)).log()


# bos -> a .6 | b .4; a -> c .55 | eos .45; b -> eos; c -> eos.
# Greedy takes a, c, eos (p .33); the best sequence is b, eos (p .4).
TRAP = chain({BOS: {A: 0.6, B_: 0.4}, A: {C: 0.55, EOS: 0.45}, B_: {EOS: 1.0}, C: {EOS: 1.0}})
# bos -> a -> b -> c -> a ... never ends.
LOOP = chain({BOS: {A: 1.0}, A: {B_: 1.0}, B_: {C: 1.0}, C: {A: 1.0}})
# a b a b ... with an exit: bos -> a; a -> b .9 | eos .1; b -> a .9 | eos .1.
REPEAT = chain({BOS: {A: 1.0}, A: {B_: 0.9, EOS: 0.1}, B_: {A: 0.9, EOS: 0.1}})


class Counter:
    """A Markov step function; ``state`` holds each row's chain index, so reordering is exercised."""

    def __init__(self, *chains: torch.Tensor) -> None:
        self.chains = torch.stack(chains)
        self.calls = 0

    def __call__(self, last: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        self.calls += 1
        return self.chains[state, last], state, None


def search(step, n_items: int = 1, **kwargs):
    args = dict(batch_size=n_items, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_length=8, device="cpu")
    return beam_search(step, init_state=torch.arange(n_items), **(args | kwargs))


def sequence_log_prob(matrix: torch.Tensor, seq: list[int]) -> float:
    return sum(float(matrix[a, b]) for a, b in itertools.pairwise([BOS, *seq]))


def test_beam_three_finds_the_best_sequence_greedy_misses() -> None:
    greedy = search(Counter(TRAP), beam_size=1)
    beam = search(Counter(TRAP), beam_size=3)
    assert greedy.tokens.tolist() == [[A, C, EOS]]
    assert beam.tokens.tolist() == [[B_, EOS]]
    assert beam.lengths.tolist() == [2]
    assert beam.log_probs.item() == pytest.approx(sequence_log_prob(TRAP, [B_, EOS]), abs=1e-5)
    # Brute force over all 3-token sequences ending in EOS agrees that b, eos is the best.
    best = max(
        ([*s[: s.index(EOS) + 1]] for s in itertools.product(range(2, V), repeat=3) if EOS in s),
        key=lambda s: sequence_log_prob(TRAP, s),
    )
    assert best == [B_, EOS]


def test_length_penalty_can_prefer_the_longer_sequence() -> None:
    result = search(Counter(TRAP), beam_size=3, length_penalty=2.0)
    assert result.tokens.tolist() == [[A, C, EOS]]


def test_search_stops_when_all_beams_finished() -> None:
    step = Counter(TRAP)
    search(step, beam_size=3, max_length=8)
    assert step.calls == 3  # a, c, eos is the longest surviving path


def test_max_length_without_eos() -> None:
    result = search(Counter(LOOP), beam_size=2, max_length=5)
    assert result.tokens.tolist() == [[A, B_, C, A, B_]]
    assert result.lengths.tolist() == [5]


def test_batch_of_two_with_different_lengths_is_padded() -> None:
    result = search(Counter(TRAP, LOOP), n_items=2, beam_size=3, max_length=4)
    assert result.tokens.tolist() == [[B_, EOS, PAD, PAD], [A, B_, C, A]]
    assert result.lengths.tolist() == [2, 4]


def test_beam_one_equals_greedy_on_random_chain() -> None:
    torch.manual_seed(0)
    matrix = torch.randn(V, V).log_softmax(-1)
    result = search(Counter(matrix), beam_size=1, max_length=6)
    seq, last = [], BOS
    for _ in range(6):
        last = int(matrix[last, BOS + 1 :].argmax()) + BOS + 1  # PAD and BOS are never generated
        seq.append(last)
        if last == EOS:
            break
    assert result.tokens[0].tolist() == seq


def test_no_repeat_ngram_blocks_repeated_trigrams() -> None:
    assert banned_ngram_tokens([A, B_, A, B_], 3) == {A}  # a b a would repeat
    assert banned_ngram_tokens([A, B_, A], 3) == set()
    assert banned_ngram_tokens([A, B_, C], 3) == set()
    assert banned_ngram_tokens([A], 0) == set()
    free = search(Counter(REPEAT), beam_size=2, max_length=6)
    assert free.tokens.tolist() == [[A, B_, A, B_, A, B_]]  # off by default: the model repeats
    blocked = search(Counter(REPEAT), beam_size=1, max_length=6, no_repeat_ngram_size=3)
    seq = blocked.tokens[0, : blocked.lengths[0]].tolist()
    trigrams = list(zip(seq, seq[1:], seq[2:], strict=False))
    assert len(trigrams) == len(set(trigrams))
    assert seq == [A, B_, A, B_, EOS]  # a b a b -> a is banned, eos is what is left
    # With a wider beam the cheaper early exit (a, eos: p .1 > .9^3 * .1) wins once loops are banned.
    assert search(Counter(REPEAT), beam_size=2, max_length=6, no_repeat_ngram_size=3).tokens.tolist() == [
        [A, EOS]
    ]


@dataclass
class Box:
    x: torch.Tensor
    n: int


class Pair(NamedTuple):
    a: torch.Tensor
    b: list[torch.Tensor]


def test_reorder_state_nested() -> None:
    index = torch.tensor([2, 0])
    state = {
        "box": Box(torch.arange(3), 7),
        "pair": Pair(torch.arange(3) * 10, [torch.arange(6).view(3, 2)]),
        "k": None,
    }
    out = reorder_state(state, index)
    assert out["box"].x.tolist() == [2, 0] and out["box"].n == 7
    assert out["pair"].a.tolist() == [20, 0] and out["pair"].b[0].tolist() == [[4, 5], [0, 1]]
    assert out["k"] is None


def make_decoder() -> TransformerDecoder:
    torch.manual_seed(3)
    config = DecoderConfig(
        vocab_size=V, d_model=16, n_heads=4, n_layers=2, d_ff=32, dropout=0.0, max_length=8
    )
    decoder = TransformerDecoder(config).eval()
    return decoder


@pytest.mark.parametrize("average_heads", [False, True])
def test_attention_along_chosen_beam_matches_forward_rerun(average_heads: bool) -> None:
    decoder = make_decoder()
    torch.manual_seed(0)
    memory, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    bias = torch.randn(8, 5)
    with torch.no_grad():
        result = beam_search(
            decoder.beam_step_fn(return_attention=True, average_heads=average_heads),
            batch_size=2, bos_id=BOS, eos_id=EOS, pad_id=PAD, beam_size=3, max_length=7, device="cpu",
            init_state=decoder.init_cache(memory, mask, bias),
        )  # fmt: skip
        inputs = torch.cat([torch.full((2, 1), BOS), result.tokens[:, :-1]], dim=1)
        rerun = decoder(inputs, memory, mask, bias, return_attention=True, average_heads=average_heads)
    assert result.lengths.tolist() == [4, 7]  # one EOS, one max_length: padding is checked too
    assert result.attention is not None and rerun.cross_attention is not None
    expected = rerun.cross_attention.movedim(-2, 0).movedim(2, 0)  # (B, T, n_layers, [heads,] L)
    assert result.attention.shape == expected.shape
    for i, n in enumerate(result.lengths.tolist()):
        assert torch.allclose(result.attention[i, :n], expected[i, :n], atol=1e-5)
        assert torch.all(result.attention[i, n:] == 0)
    # The summed log-prob is the teacher-forced log-prob of the returned tokens.
    log_probs = rerun.logits.log_softmax(-1).gather(-1, result.tokens[..., None])[..., 0]
    for i, n in enumerate(result.lengths.tolist()):
        assert log_probs[i, :n].sum().item() == pytest.approx(result.log_probs[i].item(), abs=1e-4)


def test_decoder_beam_one_equals_full_recompute_greedy() -> None:
    decoder = make_decoder()
    torch.manual_seed(5)
    memory = torch.randn(2, 5, 16)
    with torch.no_grad():
        result = beam_search(
            decoder.beam_step_fn(), batch_size=2, bos_id=BOS, eos_id=EOS, pad_id=PAD, beam_size=1,
            max_length=7, device="cpu", init_state=decoder.init_cache(memory),
        )  # fmt: skip
        for i in range(2):
            seq = [BOS]
            while len(seq) <= 7 and seq[-1] != EOS:
                logits = decoder(torch.tensor([seq]), memory[i : i + 1]).logits
                logits[..., [PAD, BOS]] = float("-inf")  # never generated
                seq.append(int(logits[0, -1].argmax()))
            assert result.tokens[i, : result.lengths[i]].tolist() == seq[1:]


def test_all_beams_are_returned_best_first_and_the_first_is_the_best() -> None:
    step = Counter(TRAP, REPEAT)
    ranked = search(step, n_items=2, beam_size=3, all_beams=True)
    best = search(Counter(TRAP, REPEAT), n_items=2, beam_size=3)
    assert ranked.tokens.shape[:2] == (2, 3) and ranked.lengths.shape == (2, 3)
    assert (ranked.scores[:, :-1] >= ranked.scores[:, 1:]).all()
    for item in range(2):
        width = int(best.lengths[item])
        assert ranked.tokens[item, 0, :width].tolist() == best.tokens[item, :width].tolist()
    assert ranked.tokens[0, 0, :2].tolist() == [B_, EOS]  # the trap's best, then the greedy path
    assert ranked.tokens[0, 1, :3].tolist() == [A, C, EOS]
