"""Transformer decoder: masks, additive cross-attention bias, returned attention, deep prompts, cache."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rrg_core.models.decoder import (
    DecoderConfig,
    MultiHeadAttention,
    TransformerDecoder,
    _causal_mask,
    eq11_bias,
)
from rrg_core.models.prompt_tuning import DeepPrompts, freeze_all_but, trainable_parameter_share

B, T, L = 2, 6, 5


def make_decoder(post_norm: bool = True, seed: int = 0, n_layers: int = 2) -> TransformerDecoder:
    torch.manual_seed(seed)
    config = DecoderConfig(
        vocab_size=13, d_model=16, n_heads=4, n_layers=n_layers, d_ff=32, dropout=0.0, max_length=10,
        post_norm=post_norm,
    )  # fmt: skip
    return TransformerDecoder(config).eval()


def inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 13, (B, T), generator=g)
    memory = torch.randn(B, L, 16, generator=g)
    memory_mask = torch.ones(B, L, dtype=torch.bool)
    memory_mask[0, 3:] = False  # item 0 has only 3 real memory rows
    return tokens, memory, memory_mask


@pytest.mark.parametrize("post_norm", [True, False])
def test_causal_mask_future_tokens_do_not_change_earlier_logits(post_norm: bool) -> None:
    decoder = make_decoder(post_norm)
    tokens, memory, mask = inputs()
    changed = tokens.clone()
    changed[:, 4] = (changed[:, 4] % 12) + 1
    a = decoder(tokens, memory, mask).logits
    b = decoder(changed, memory, mask).logits
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert not torch.allclose(a[:, 4:], b[:, 4:], atol=1e-4)


def test_causal_mask_matrix_sees_all_prefixes() -> None:
    got = _causal_mask(n_prefix=2, start=1, t_new=2, device=torch.device("cpu"))
    expected = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(got, expected)


def test_memory_padding_rows_are_ignored() -> None:
    decoder = make_decoder()
    tokens, memory, mask = inputs()
    other = memory.clone()
    other[0, 3:] = torch.randn(2, 16) * 10
    a = decoder(tokens, memory, mask, return_attention=True)
    b = decoder(tokens, other, mask, return_attention=True)
    assert torch.allclose(a.logits, b.logits, atol=1e-6)
    assert a.cross_attention is not None
    assert torch.all(a.cross_attention[:, 0, :, :, 3:] == 0)
    # Without the mask the padded rows do matter, so the check above is not vacuous.
    assert not torch.allclose(decoder(tokens, memory).logits, decoder(tokens, other).logits, atol=1e-4)


@pytest.mark.parametrize("average_heads", [False, True])
def test_returned_attention_shape_and_rows_sum_to_one(average_heads: bool) -> None:
    decoder = make_decoder()
    tokens, memory, mask = inputs()
    att = decoder(tokens, memory, mask, return_attention=True, average_heads=average_heads).cross_attention
    assert att is not None
    assert att.shape == ((2, B, T, L) if average_heads else (2, B, 4, T, L))
    assert torch.allclose(att.sum(-1), torch.ones(att.shape[:-1]), atol=1e-6)
    assert decoder(tokens, memory, mask).cross_attention is None


def test_attend_bias_is_additive_pre_softmax_logit() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 4, dropout=0.0)
    query, memory = torch.randn(B, T, 16), torch.randn(B, L, 16)
    bias = torch.randn(T, L)
    mask = torch.ones(B, 1, 1, L, dtype=torch.bool)
    mask[1, ..., -1] = False
    k, v = mha.project_kv(memory)
    _, weights = mha.attend(query, k, v, mask, bias)
    q = mha.split_heads(mha.q_proj(query))
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(4) + bias
    manual = logits.masked_fill(~mask, float("-inf")).softmax(-1)
    assert torch.allclose(weights, manual, atol=1e-6)


def test_cross_bias_shifts_decoder_attention_logits_exactly() -> None:
    # The first layer's cross-attention query does not depend on the bias, so its attention with the
    # bias must be softmax(log(attention without bias) + bias), row by row.
    decoder = make_decoder()
    tokens, memory, _ = inputs()
    bias = eq11_bias(torch.randn(decoder.config.max_length, L), k=3.0, d_head=4)
    plain = decoder(tokens, memory, return_attention=True).cross_attention
    biased = decoder(tokens, memory, cross_bias=bias, return_attention=True).cross_attention
    assert plain is not None and biased is not None
    expected = (plain[0].log() + bias[:T]).softmax(-1)
    assert torch.allclose(biased[0], expected, atol=1e-5)
    assert not torch.allclose(biased[1], plain[1], atol=1e-3)
    # UAR learns M through this bias, so gradients must reach it.
    mask_logits = torch.zeros(decoder.config.max_length, L, requires_grad=True)
    decoder(
        tokens, memory, cross_bias=eq11_bias(mask_logits, k=3.0, d_head=4)
    ).logits.square().sum().backward()
    assert mask_logits.grad is not None and mask_logits.grad[:T].abs().sum() > 0
    assert torch.all(mask_logits.grad[T:] == 0)  # rows past the sequence are not used


def test_eq11_bias_form() -> None:
    m = torch.tensor([[0.0, 2.0]])
    assert torch.allclose(eq11_bias(m, k=1000.0, d_head=64), 1000 * torch.sigmoid(m) / 8)


def test_zero_length_prefixes_equal_no_prefixes() -> None:
    decoder = make_decoder()
    tokens, memory, mask = inputs()
    empty = [(torch.zeros(B, 0, 16), torch.zeros(B, 0, 16)) for _ in range(2)]
    assert torch.allclose(
        decoder(tokens, memory, mask, prefixes=empty).logits, decoder(tokens, memory, mask).logits
    )
    zero_prompts = DeepPrompts.for_decoder(decoder.config, n_prefix=0)(B)
    assert torch.allclose(
        decoder(tokens, memory, mask, prefixes=zero_prompts).logits, decoder(tokens, memory, mask).logits
    )


def test_every_query_attends_to_prefixes() -> None:
    decoder = make_decoder()
    tokens, memory, mask = inputs()
    prompts = DeepPrompts.for_decoder(decoder.config, n_prefix=3)
    base = decoder(tokens, memory, mask, prefixes=prompts(B)).logits
    with torch.no_grad():
        prompts.prefix[:, 16:32] += 1.0  # layer 0 values only
    moved = decoder(tokens, memory, mask, prefixes=prompts(B)).logits
    per_position = (moved - base).abs().amax(dim=(0, 2))
    assert torch.all(per_position > 1e-4), per_position  # position 0 included


@pytest.mark.parametrize("hidden", [None, 8])
def test_deep_prompts_shapes(hidden: int | None) -> None:
    prompts = DeepPrompts(n_layers=3, d_model=16, n_prefix=4, hidden=hidden)
    out = prompts(5)
    assert len(out) == 3
    assert all(k.shape == (5, 4, 16) and v.shape == (5, 4, 16) for k, v in out)
    assert not torch.equal(out[0][0], out[0][1])


@pytest.mark.parametrize("post_norm", [True, False])
def test_incremental_decoding_equals_full_forward(post_norm: bool) -> None:
    decoder = make_decoder(post_norm)
    tokens, memory, mask = inputs()
    prefixes = DeepPrompts.for_decoder(decoder.config, n_prefix=2)(B)
    bias = torch.randn(decoder.config.max_length, L)
    offset = torch.randn(B, 16)
    full = decoder(tokens, memory, mask, bias, prefixes, return_attention=True, input_offset=offset)
    cache = decoder.init_cache(memory, mask, bias, prefixes, offset)
    logits, attention = [], []
    for t in range(T):
        out, cache = decoder.step(tokens[:, t], cache, return_attention=True)
        logits.append(out.logits)
        attention.append(out.cross_attention)
    assert cache.position == T
    assert torch.allclose(torch.cat(logits, 1), full.logits, atol=1e-5)
    assert torch.allclose(torch.cat(attention, -2), full.cross_attention, atol=1e-5)
    # Chunks of several tokens work too (a prompt, then token by token).
    cache = decoder.init_cache(memory, mask, bias, prefixes, offset)
    first, cache = decoder.step(tokens[:, :4], cache)
    rest, _ = decoder.step(tokens[:, 4:], cache)
    assert torch.allclose(torch.cat([first.logits, rest.logits], 1), full.logits, atol=1e-5)


def test_post_and_pre_norm_differ_and_are_finite() -> None:
    tokens, memory, mask = inputs()
    post, pre = make_decoder(True), make_decoder(False)
    assert isinstance(pre.final_norm, nn.LayerNorm) and isinstance(post.final_norm, nn.Identity)
    a, b = post(tokens, memory, mask).logits, pre(tokens, memory, mask).logits
    assert a.shape == b.shape == (B, T, 13)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert not torch.allclose(a, b)


def test_too_long_raises() -> None:
    decoder = make_decoder()
    _, memory, _ = inputs()
    with pytest.raises(ValueError, match="max_length"):
        decoder(torch.ones(B, 11, dtype=torch.long), memory)


def test_prompt_tuning_trains_only_prompts_and_new_head() -> None:
    decoder = make_decoder()
    prompts = DeepPrompts.for_decoder(decoder.config, n_prefix=3)
    model = nn.ModuleDict({"decoder": decoder, "prompts": prompts})
    old_head = decoder.head
    head = decoder.replace_head()
    assert head is decoder.head and head is not old_head
    freeze_all_but(model, [prompts, head])
    trainable, total, share = trainable_parameter_share(model)
    expected = sum(p.numel() for p in prompts.parameters()) + sum(p.numel() for p in head.parameters())
    assert trainable == expected and 0 < share < 1 and total > trainable
    tokens, memory, mask = inputs()
    decoder(tokens, memory, mask, prefixes=prompts(B)).logits.sum().backward()
    assert prompts.prefix.grad is not None and head.weight.grad is not None
    assert all(p.grad is None for n, p in decoder.named_parameters() if not n.startswith("head."))


def test_input_offset_reaches_the_first_layers_attention() -> None:
    decoder = make_decoder()
    tokens, memory, mask = inputs()
    plain = decoder(tokens, memory, mask, return_attention=True).cross_attention
    shifted = decoder(tokens, memory, mask, return_attention=True, input_offset=torch.randn(B, 16))
    assert not torch.allclose(plain[0], shifted.cross_attention[0])  # layer 1's queries see it
    with pytest.raises(ValueError, match="input_offset"):
        decoder(tokens, memory, mask, input_offset=torch.randn(B, 15))
