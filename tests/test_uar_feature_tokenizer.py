"""LSU's feature tokenizer: k-means, tokens, checkpoints, and the training options that go with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import RRGError
from rrg_core.models.preprocess import Preprocess
from rrg_core.models.uar import UAR, UARConfig
from rrg_core.models.uar.feature_tokenizer import FeatureTokenizer, FeatureTokenizerConfig, kmeans
from rrg_core.models.uar.io import (
    load_lsu_tokenizer,
    load_tokenizer_for,
    load_uar,
    save_tokenizer,
    save_uar,
)
from rrg_core.models.uar.losses import _drop_words

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = FeatureTokenizerConfig(block=4, image_size=32, codebook_size=8)  # stride 8: a 4 x 4 grid


def _fitted(seed: int = 0) -> FeatureTokenizer:
    tokenizer = FeatureTokenizer(SMALL)  # random weights: no file needed, the behaviour is the same
    generator = torch.Generator().manual_seed(seed)
    tokenizer.fit_codebook([torch.randn(6, 1, 32, 32, generator=generator)], iterations=5)
    return tokenizer


def test_kmeans_finds_separated_clusters_and_is_deterministic() -> None:
    generator = torch.Generator().manual_seed(1)
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([m + 0.1 * torch.randn(200, 2, generator=generator) for m in means])
    centres = kmeans(points, 3, iterations=10, seed=0)
    nearest = torch.cdist(means, centres).min(dim=1).values
    assert nearest.max() < 0.1
    assert torch.equal(centres, kmeans(points, 3, iterations=10, seed=0))


def test_config_says_its_grid_and_refuses_bad_values() -> None:
    assert (SMALL.downsample, SMALL.grid_size) == (8, 4)
    default = FeatureTokenizerConfig()
    assert (default.image_size, default.downsample, default.grid_size) == (112, 8, 14)
    assert FeatureTokenizerConfig(block=6, image_size=128).grid_size == 8
    for bad in ({"block": 0}, {"block": 17}, {"codebook_size": 1}, {"in_channels": 2}, {"image_size": 36}):
        with pytest.raises(RRGError):
            FeatureTokenizerConfig(**{"block": 4, "image_size": 32, **bad})


def test_tokens_are_ids_of_the_grid_and_stay_the_same_in_train_mode() -> None:
    tokenizer = _fitted()
    images = torch.randn(3, 2, 1, 32, 32)
    tokens = tokenizer.tokens(images)
    assert tokens.shape == (3, 2, 4, 4) and tokens.dtype == torch.long
    assert int(tokens.min()) >= 0 and int(tokens.max()) < SMALL.codebook_size
    tokenizer.train()
    assert not tokenizer.training and torch.equal(tokenizer.tokens(images), tokens)
    with pytest.raises(RRGError, match="1, height, width"):
        tokenizer.tokens(torch.randn(2, 3, 32, 32))


def test_too_few_vectors_for_the_codebook_are_refused() -> None:
    tokenizer = FeatureTokenizer(FeatureTokenizerConfig(block=4, image_size=8, codebook_size=8))
    with pytest.raises(RRGError, match="cannot fit 8 codes"):
        tokenizer.fit_codebook([torch.randn(1, 1, 8, 8)])


def _uar(tokenizer: FeatureTokenizer) -> UAR:
    config = UARConfig(
        vocab_size=13, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32, n_basis=32,
        max_length=8, image_size=32, downsample=8, codebook_size=8,
    )  # fmt: skip
    return UAR(config, tokenizer)


def test_uar_checkpoint_keeps_the_feature_tokenizer(tmp_path: Path) -> None:
    tokenizer = _fitted()
    model = _uar(tokenizer).eval()
    vocab = Vocabulary.build(["a b c d e f g h"], 1)
    preprocess = Preprocess(image_size=32, channels=1, mean=(0.5,), std=(0.5,), views=2)
    save_uar(model, tmp_path / "uar", vocab=vocab, preprocess=preprocess)
    loaded, checkpoint = load_uar(tmp_path / "uar")
    assert checkpoint.config["tokenizer"]["kind"] == "features"
    assert isinstance(loaded.tokenizer, FeatureTokenizer)
    images = torch.randn(2, 2, 1, 32, 32)
    assert torch.equal(loaded.tokenizer.tokens(images), tokenizer.tokens(images))
    generated = loaded.generate(images, beam_size=1, max_length=4)
    assert generated.attention[0].shape[1:] == (2, 4, 4)  # heatmaps on the tokenizer's grid


def test_tokenizer_checkpoint_round_trip_and_fit_check(tmp_path: Path) -> None:
    tokenizer = _fitted()
    preprocess = Preprocess(image_size=32, channels=1, mean=(0.5,), std=(0.5,))
    save_tokenizer(tokenizer, tmp_path / "tok", preprocess=preprocess)
    loaded, checkpoint = load_lsu_tokenizer(tmp_path / "tok")
    assert checkpoint.kind == "feature_tokenizer" and torch.equal(loaded.codebook, tokenizer.codebook)
    model = _uar(tokenizer)
    assert load_tokenizer_for(model.config, tmp_path / "tok").config == SMALL
    other = UARConfig(vocab_size=13, d_model=16, n_heads=2, image_size=32, downsample=8, codebook_size=16)
    with pytest.raises(RRGError, match="16"):
        load_tokenizer_for(other, tmp_path / "tok")


def test_codebook_init_starts_alike_codes_alike() -> None:
    model = _uar(_fitted())
    codes = torch.randn(8, 40)
    codes[1] = codes[0] + 0.01 * torch.randn(40)  # codes 0 and 1 look alike
    model.init_visual_embedding(codes)
    weight = torch.nn.functional.normalize(model.visual_embedding.weight, dim=1)
    similarity = weight @ weight.T
    assert similarity[0, 1] > 0.99 and similarity[0, 2:].abs().max() < 0.9
    with pytest.raises(RRGError, match="code vectors"):
        model.init_visual_embedding(torch.randn(5, 40))


def test_word_dropout_hides_words_only_while_training() -> None:
    config = UARConfig(vocab_size=50, d_model=16, n_heads=2, word_dropout=0.5)
    ids = torch.tensor([[1, *list(range(4, 44)), 2, 0, 0]])
    dropped = _drop_words(ids, config)
    hidden = dropped == config.unk_id
    assert 5 <= int(hidden.sum()) <= 35
    assert dropped[0, 0] == 1 and dropped[0, 41] == 2 and (dropped[0, 42:] == 0).all()
    assert torch.equal(_drop_words(ids, UARConfig(vocab_size=50, d_model=16, n_heads=2)), ids)
    with pytest.raises(RRGError, match="word_dropout"):
        UARConfig(vocab_size=50, word_dropout=1.0)


def test_image_context_conditions_every_decoding_path() -> None:
    config = UARConfig(
        vocab_size=13, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32, n_basis=32,
        max_length=8, image_size=32, downsample=8, codebook_size=8, image_context=True,
    )  # fmt: skip
    model = UAR(config).eval()
    tokens = torch.randint(0, 8, (2, 2, 4, 4))
    encoding = model.encode(tokens)
    assert model.init_cache(encoding).input_offset.shape == (2, 16)
    report = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    with torch.no_grad():
        logits = model.teacher_forced(tokens, report)[1]
        model.context_projection.weight.zero_()
        model.context_projection.bias.fill_(1.0)
        assert not torch.allclose(model.teacher_forced(tokens, report)[1], logits)
    assert model.attention_maps(tokens, report).shape == (2, 3, 2, 4, 4)
    assert len(model.generate(tokens, beam_size=2, max_length=4).tokens) == 2


def test_the_codebook_fit_gives_the_tokens_of_the_images_it_fit() -> None:
    tokenizer = FeatureTokenizer(SMALL)
    images = torch.randn(6, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    fit = tokenizer.fit_codebook([images[:4], images[4:]], iterations=3)
    assert fit.figures["vectors"] == 6 * 16 and torch.equal(fit.codes, tokenizer.tokens(images))
