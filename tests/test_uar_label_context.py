"""UAR's label context (ours): the decoder writes for the labels it is given, the findings head's
at inference, cut at thresholds that a checkpoint keeps; and the feature tokenizer's fine-tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import RRGError
from rrg_core.models.uar import UAR, UARConfig
from rrg_core.models.uar.config import default_preprocess
from rrg_core.models.uar.feature_tokenizer import FeatureTokenizer, FeatureTokenizerConfig
from rrg_core.models.uar.io import load_uar, save_uar
from rrg_core.observations import NUM_OBSERVATIONS

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(**changes: object) -> UARConfig:
    fields = dict(
        vocab_size=13, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32, n_basis=32,
        max_length=8, image_size=32, downsample=8, codebook_size=8, lambda_findings=1.0, label_context=True,
    )  # fmt: skip
    return UARConfig(**{**fields, **changes})


def test_label_context_needs_the_findings_head() -> None:
    with pytest.raises(RRGError, match="lambda_findings"):
        _config(lambda_findings=0.0)
    plain = UAR(_config(label_context=False))
    with pytest.raises(RRGError, match="given no labels"):
        plain.set_thresholds(0.3)
    assert not hasattr(plain, "thresholds")


def test_the_decoder_is_given_the_head_labels_cut_at_the_thresholds() -> None:
    torch.manual_seed(0)
    model = UAR(_config()).eval()
    tokens = torch.randint(0, 8, (2, 2, 4, 4))
    encoding = model.encode(tokens)
    probabilities = torch.sigmoid(model.findings_logits(encoding))
    model.set_thresholds(probabilities[0].tolist())  # study 0 sits on every cut: all present
    assert model.reader_states(encoding)[0].tolist() == [1] * NUM_OBSERVATIONS
    model.set_thresholds(1.0)
    assert model.reader_states(encoding).sum() == 0
    with pytest.raises(ValueError, match="thresholds in"):
        model.set_thresholds([0.5, 1.5])
    none, every = torch.zeros(2, NUM_OBSERVATIONS), torch.ones(2, NUM_OBSERVATIONS)
    offset = model.decoder_inputs(encoding).offset  # the head's labels: none present at threshold 1
    assert torch.allclose(offset, model.decoder_inputs(encoding, none).offset)
    assert not torch.allclose(offset, model.decoder_inputs(encoding, every).offset)
    report = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    with torch.no_grad():
        given = model.teacher_forced(tokens, report, every)[1]
        assert not torch.allclose(given, model.teacher_forced(tokens, report)[1])
        model.label_projection.weight.mul_(50.0)  # labels that outweigh the image: drafts follow them
        drafts = [model.generate(tokens, beam_size=2, states=s).tokens for s in (none, every)]
    assert drafts[0] != drafts[1]
    assert model.attention_maps(tokens, report, states=every).shape == (2, 3, 2, 4, 4)


def test_thresholds_travel_with_the_checkpoint(tmp_path: Path) -> None:
    model = UAR(_config())
    cuts = torch.linspace(0.1, 0.9, NUM_OBSERVATIONS)
    model.set_thresholds(cuts)
    vocab = Vocabulary.build(["a b c d e f g h"], 1)
    save_uar(model, tmp_path / "uar", vocab=vocab, preprocess=default_preprocess(model.config))
    loaded, checkpoint = load_uar(tmp_path / "uar")
    assert torch.allclose(loaded.thresholds, cuts) and checkpoint.config["model"]["label_context"]


def test_fine_tuning_splits_the_encoder_where_asked() -> None:
    tokenizer = FeatureTokenizer(FeatureTokenizerConfig(block=4, image_size=32, codebook_size=8))
    images = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        whole = tokenizer.feature_map(images)
        for block in (0, 2, 3):
            assert torch.allclose(tokenizer.late_map(tokenizer.early_map(images, block), block), whole)
    with pytest.raises(RRGError, match=r"block must be in 0\.\.3"):
        tokenizer.early_map(images, 4)


def test_alternatives_are_written_for_labels_drawn_from_the_head() -> None:
    torch.manual_seed(0)
    model = UAR(_config()).eval()
    encoding = model.encode(torch.randint(0, 8, (64, 2, 4, 4)))
    generator = torch.Generator().manual_seed(0)
    model.set_thresholds(1e-6)  # far below every probability: always drawn present
    assert model.sampled_states(encoding, generator).all()
    model.set_thresholds(0.5)
    probabilities = torch.sigmoid(model.findings_logits(encoding))
    at_the_cut = (probabilities - 0.5).abs() < 0.05  # odds near one half there
    share = model.sampled_states(encoding, generator)[at_the_cut].float().mean()
    assert at_the_cut.sum() > 50 and 0.3 < float(share) < 0.7


def test_label_rows_join_the_memory_and_heatmaps_stay_on_the_image() -> None:
    torch.manual_seed(0)
    model = UAR(_config(label_context=False, label_rows=True)).eval()
    model.set_stage(2)  # TIR's mask in the attention: it must cover the label rows too
    tokens = torch.randint(0, 8, (2, 2, 4, 4))
    encoding = model.encode(tokens)
    every = torch.ones(2, NUM_OBSERVATIONS)
    inputs = model.decoder_inputs(encoding, every)
    assert inputs.memory.shape == (2, 32 + NUM_OBSERVATIONS, 16) and inputs.offset is None
    bias = inputs.cross_bias
    assert bias.shape[-1] == 32 + NUM_OBSERVATIONS
    assert torch.allclose(bias[:, 32:], bias[:, :32].mean(dim=-1, keepdim=True).expand(-1, 14))
    assert torch.equal(inputs.memory[:, :32], encoding.memory)
    report = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    with torch.no_grad():
        given = model.teacher_forced(tokens, report, every)[1]
        assert not torch.allclose(given, model.teacher_forced(tokens, report, torch.zeros(2, 14))[1])
    maps = model.attention_maps(tokens, report, states=every)
    assert maps.shape == (2, 3, 2, 4, 4) and torch.allclose(maps.sum(dim=(-3, -2, -1)), torch.ones(2, 3))
    out = model.generate(tokens, beam_size=2, max_length=4)
    assert all(torch.allclose(m.sum(dim=(-3, -2, -1)), torch.ones(len(m))) for m in out.attention)


def test_folded_batch_norms_make_the_same_features_and_follow_new_weights() -> None:
    torch.manual_seed(0)
    config = FeatureTokenizerConfig(block=4, image_size=32, codebook_size=8, normalize=False)
    tokenizer = FeatureTokenizer(config)
    for norm in tokenizer.modules():  # statistics other than the initial 0 / 1, so folding does something
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.data.uniform_(0.5, 1.5)
    tokenizer.weights_changed()
    images = torch.randn(3, 1, 32, 32)
    unfolded = tokenizer.feature_map(images).permute(0, 2, 3, 1)
    assert torch.allclose(tokenizer.cell_features(images), unfolded, atol=1e-4)
    assert all(key.startswith(("features.", "codebook")) for key in tokenizer.state_dict())  # not saved
    other = FeatureTokenizer(tokenizer.config)
    tokenizer.load_state_dict(other.state_dict())  # new weights: the folded copy is made again
    expected = other.feature_map(images).permute(0, 2, 3, 1)
    assert torch.allclose(tokenizer.cell_features(images), expected, atol=1e-4)


def test_a_chooser_picks_the_draft_among_the_beams() -> None:
    torch.manual_seed(0)
    model = UAR(_config()).eval()
    tokens = torch.randint(0, 8, (2, 2, 4, 4))
    best = model.generate(tokens, beam_size=4, max_length=6)
    seen = []

    def last(labels, beams):
        seen.append((labels, beams))
        return len(beams) - 1

    chosen = model.generate(tokens, beam_size=4, max_length=6, choose=last)
    assert len(seen) == 2 and all(len(beams) == 4 and labels.shape == (14,) for labels, beams in seen)
    assert [beams[0] for _, beams in seen] == best.tokens  # the best beam comes first
    assert chosen.tokens == [beams[-1] for _, beams in seen]
    assert [len(m) for m in chosen.attention] == [len(t) for t in chosen.tokens]
    with pytest.raises(RRGError, match="consistent_beams"):
        _config(label_context=False, consistent_beams=5)
