"""UAR model (LSU tokens, CRA, TIR mask, two stages, Table 2 ablations, beam search with heatmaps)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from rrg_core.checkpoints import CheckpointError
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import RRGError
from rrg_core.models.decoder import eq11_bias
from rrg_core.models.preprocess import Preprocess
from rrg_core.models.uar import UAR
from rrg_core.models.uar.config import ABLATIONS, UARConfig, ablation_config, check_tokenizer
from rrg_core.models.uar.dvae import DVAE, DVAEConfig
from rrg_core.models.uar.io import load_dvae, load_tokenizer_for, load_uar, save_tokenizer, save_uar
from rrg_core.models.uar.losses import same_reports

PREPROCESS = Preprocess(image_size=32, channels=1, views=2)
VOCAB, B, V, GRID = 20, 4, 2, 4
L = V * GRID * GRID

PREPROCESS = Preprocess(image_size=32, channels=1, views=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**overrides) -> UARConfig:
    sizes = dict(
        vocab_size=VOCAB, d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=2, d_ff=64,
        dropout=0.0, max_length=12, views=V, image_size=32, codebook_size=16, downsample=8, n_basis=64,
        base_pretrained=None,
    )  # fmt: skip
    return UARConfig(**{**sizes, **overrides})


def tiny(seed: int = 0, **overrides) -> UAR:
    torch.manual_seed(seed)
    return UAR(tiny_config(**overrides))


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Token grids (B, V, 4, 4) and reports BOS w.. EOS PAD.. whose words depend on the image."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 16, (B, V, GRID, GRID), generator=g)
    reports = torch.zeros(B, 8, dtype=torch.long)
    for b in range(B):
        length = 3 + b % 3
        words = 4 + tokens[b].flatten()[:length] % 16
        reports[b, 0], reports[b, 1 : length + 1], reports[b, length + 1] = 1, words, 2
    return tokens, reports


def test_defaults_are_the_papers() -> None:
    config = UARConfig(vocab_size=1000)
    assert (config.d_model, config.n_heads, config.n_decoder_layers, config.n_basis) == (512, 8, 3, 2048)
    assert (config.grid_size, config.memory_length, config.mask_scale) == (14, 392, 1000.0)
    assert config.first_stage() == 1 and config.decoder_config().n_layers == 3


def test_forward_shapes_and_stage_losses() -> None:
    model = tiny().train()
    tokens, reports = batch()
    assert int(model.stage) == 1 and not model.mask_active and model.loss_weights() == (1.0, 1.0, 0.0)
    out = model(tokens, reports)
    assert out.logits.shape == (B, 7, VOCAB)
    assert out.mask_loss.item() == 0.0 and out.global_loss.item() > 0
    assert torch.allclose(out.loss, out.ce + out.global_loss)
    model.set_stage(2)
    assert model.mask_active and model.loss_weights() == (1.0, 1.0, 1.0)
    out = model(tokens, reports)
    assert out.mask_loss.item() == pytest.approx(12 * L * 0.5)  # eq 12 at M = 0: sum of 1 - 1/2
    assert torch.allclose(out.loss, out.ce + out.global_loss + out.mask_loss)
    for value in (out.loss, out.ce, out.global_loss, out.mask_loss):
        assert torch.isfinite(value)
    with pytest.raises(ValueError, match="stage"):
        model.set_stage(3)


def test_mask_loss_mean_reduction_and_stage_in_state_dict() -> None:
    model = tiny(mask_loss_reduction="mean")
    model.set_stage(2)
    assert model.mask_loss().item() == pytest.approx(0.5)
    state = model.state_dict()
    assert int(state["stage"]) == 2
    fresh = tiny(mask_loss_reduction="mean")
    fresh.load_state_dict(state)
    assert int(fresh.stage) == 2 and fresh.tir_mask.requires_grad


def test_cra_is_registered_once_and_runs_inside_the_decoder() -> None:
    model = tiny()
    names = [name for name, _ in model.named_parameters()]
    assert any(n.startswith("cra.") for n in names)
    assert not any("token_transform" in n for n in names)
    _, reports = batch()
    expected = model.cra(model.decoder.token_embedding(reports))
    assert torch.allclose(model.report_features(reports), expected)
    clone = copy.deepcopy(model)  # the bound method must follow the copy, not the original
    assert clone.decoder.token_transform.__self__ is clone.cra


def test_losses_decrease_over_a_few_steps() -> None:
    model = tiny().train()
    model.set_stage(2)
    tokens, reports = batch()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ce, aligned, totals = [], [], []
    for _ in range(15):
        out = model(tokens, reports)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        ce.append(out.ce.item())
        aligned.append(out.global_loss.item())
        totals.append(out.loss.item())
    assert ce[-1] < 0.5 * ce[0]
    assert aligned[-1] < 0.8 * aligned[0]
    assert totals[-1] < totals[0]
    assert model.tir_mask.grad is not None and model.tir_mask.grad.abs().sum() > 0


def test_findings_head_is_off_by_default_and_learns_the_labels_when_on() -> None:
    tokens, reports = batch()
    assert tiny().findings_head is None and float(tiny()(tokens, reports).findings_loss) == 0.0
    labels = torch.zeros(B, 14, dtype=torch.bool)
    labels[torch.arange(B), torch.arange(B)] = True  # each study its own observation
    model = tiny(lambda_findings=0.5).train()
    unlabelled = model(tokens, reports)
    assert float(unlabelled.findings_loss) == 0.0  # no labels given: no term, but the head's output
    assert unlabelled.findings_logits.shape == (B, 14) and tiny()(tokens, reports).findings_logits is None
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model(tokens, reports, findings=labels)
        expected = out.ce + out.global_loss + 0.5 * out.findings_loss
        assert torch.allclose(out.loss, expected)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        losses.append(float(out.findings_loss))
    assert losses[-1] < 0.3 * losses[0]
    with torch.no_grad():
        probabilities = model.findings_logits(model.eval().encode(tokens)).sigmoid()
    assert probabilities[labels].min() > probabilities[~labels].max()  # the labels are told apart


def test_findings_head_refusals() -> None:
    with pytest.raises(RRGError, match="lambda_findings must be >= 0"):
        tiny_config(lambda_findings=-1.0)
    model = tiny()
    with pytest.raises(RRGError, match="no findings head"):
        model.findings_logits(model.encode(batch()[0]))


def test_stage_one_leaves_the_mask_untrained() -> None:
    model = tiny().train()
    tokens, reports = batch()
    model(tokens, reports).loss.backward()
    assert model.tir_mask.grad is None and not model.tir_mask.requires_grad
    model.set_stage(2)
    assert model.tir_mask.requires_grad


def test_mask_term_changes_attention() -> None:
    model = tiny().eval()
    tokens, reports = batch()
    with torch.no_grad():
        model.tir_mask.copy_(torch.randn(12, L) * 0.1)
    model.set_stage(1)
    without = model.attention_maps(tokens, reports)
    model.set_stage(2)
    with_mask = model.attention_maps(tokens, reports)
    assert without.shape == with_mask.shape == (B, 7, V, GRID, GRID)
    assert (without - with_mask).abs().max() > 0.05
    # A mask that is constant along each row shifts every logit of the row alike: softmax ignores it.
    with torch.no_grad():
        model.tir_mask.copy_(torch.randn(12, 1).expand(12, L))
    assert torch.allclose(model.attention_maps(tokens, reports), without, atol=1e-5)


def test_a_large_mask_scale_pins_attention_to_the_unmasked_cell() -> None:
    """Eq 11 with k large: sigmoid(M) ~ 1 on one cell and ~ 0 elsewhere puts all attention there."""
    model = tiny(mask_scale=1000.0).eval()
    model.set_stage(2)
    tokens, reports = batch()
    with torch.no_grad():
        model.tir_mask.fill_(-20.0)
        model.tir_mask[:, 5].fill_(20.0)
    maps = model.attention_maps(tokens, reports).flatten(2)
    assert torch.allclose(maps[..., 5], torch.ones(B, 7), atol=1e-4)


def test_mask_bias_is_eq11_in_float32_and_fine_under_autocast() -> None:
    model = tiny(mask_scale=1000.0).eval()
    model.set_stage(2)
    tokens, reports = batch()
    with torch.no_grad():
        model.tir_mask.copy_(torch.randn(12, L) * 0.01)
    bias = model.cross_bias()
    assert bias.dtype == torch.float32 and torch.allclose(bias, eq11_bias(model.tir_mask, 1000.0, 8))
    full, mask_loss = model.attention_maps(tokens, reports), model.mask_loss().item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.cross_bias().dtype == torch.float32
        mixed = model.attention_maps(tokens, reports)
        assert model.mask_loss().item() == pytest.approx(mask_loss, rel=1e-6)
    assert (full - mixed).abs().max() < 2e-3


@pytest.mark.parametrize("stage", [1, 2])
def test_generate_returns_tokens_and_attention_that_sums_to_one(stage: int) -> None:
    model = tiny().eval()
    model.set_stage(stage)
    with torch.no_grad():
        model.tir_mask.copy_(torch.randn(12, L))
    tokens, _ = batch()
    out = model.generate(tokens, beam_size=3, max_length=6)
    assert len(out.tokens) == len(out.attention) == B and out.scores.shape == (B,)
    for ids, maps in zip(out.tokens, out.attention, strict=True):
        assert 1 <= len(ids) <= 6 and all(0 <= i < VOCAB for i in ids)
        assert maps.shape == (len(ids), V, GRID, GRID)
        assert torch.allclose(maps.sum(dim=(1, 2, 3)), torch.ones(len(ids)), atol=1e-5)
        assert bool((maps >= 0).all())
    one_layer = model.generate(tokens, beam_size=3, max_length=6, attention_layer=-1)
    assert one_layer.tokens == out.tokens
    with pytest.raises(ValueError, match="attention_layer"):
        model.generate(tokens, max_length=3, attention_layer=5)


def test_generated_attention_matches_teacher_forcing_of_the_same_tokens() -> None:
    """Incremental decoding (CRA applied token by token) gives the heatmaps of a full pass."""
    model = tiny().eval()
    model.set_stage(2)
    with torch.no_grad():
        model.tir_mask.copy_(torch.randn(12, L))
    tokens, _ = batch()
    out = model.generate(tokens[:1], beam_size=1, max_length=6)
    ids = torch.tensor([[1, *out.tokens[0]]])
    forced = model.attention_maps(tokens[:1], ids)[0]
    assert torch.allclose(out.attention[0], forced, atol=1e-5)


def test_tokenizer_gives_images_the_same_path_and_a_mismatch_is_refused() -> None:
    torch.manual_seed(0)
    dvae = DVAE(DVAEConfig(image_size=32, downsample=8, codebook_size=16, embed_dim=8, hidden=8))
    model = tiny().eval()
    images = torch.randn(2, V, 3, 32, 32)
    with pytest.raises(RRGError, match="attach"):
        model.generate(images, max_length=3)
    model.attach_tokenizer(dvae)
    assert not any(p.requires_grad for p in model.tokenizer.parameters())
    by_images = model.generate(images, max_length=4)
    by_tokens = model.generate(dvae.tokens(images), max_length=4)
    assert by_images.tokens == by_tokens.tokens
    wrong = DVAE(DVAEConfig(image_size=32, downsample=8, codebook_size=32, embed_dim=8, hidden=8))
    with pytest.raises(RRGError, match="codebook of 32 codes"):
        tiny().attach_tokenizer(wrong)
    with pytest.raises(RRGError, match="grid"):
        check_tokenizer(DVAEConfig(image_size=64, codebook_size=16), tiny_config())


@pytest.mark.parametrize("row", list(ABLATIONS))
def test_ablation_rows_build_train_and_generate(row: str) -> None:
    torch.manual_seed(0)
    config = ablation_config(row, VOCAB, **{k: v for k, v in dataclasses.asdict(tiny_config()).items()
                                            if k not in ("vocab_size", *ABLATIONS[row])})  # fmt: skip
    if row == "base":
        config = dataclasses.replace(config, image_size=64)  # a 2 x 2 CNN grid per view
    model = UAR(config).train()
    model.set_stage(config.first_stage())
    _, reports = batch()
    visual = torch.randn(B, V, 3, 64, 64) if row == "base" else batch()[0]
    out = model(visual, reports)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert (model.cra is not None) == config.use_cra and (model.tir_mask is not None) == config.use_tir
    assert (out.global_loss.item() > 0) == config.use_global_loss
    assert (out.mask_loss.item() > 0) == (row == "lsu_cra_tir")  # one stage: the mask from the start
    generated = model.eval().generate(visual[:2], max_length=4)
    grid = (V, 2, 2) if row == "base" else (V, GRID, GRID)
    assert generated.attention[0].shape[1:] == grid
    assert model.image_global(visual).shape == model.report_global(reports).shape == (B, 32)


def test_ablation_rows_differ_as_table2_says() -> None:
    assert ablation_config("base", VOCAB).first_stage() == 2
    assert ablation_config("lsu_cra_tir", VOCAB).first_stage() == 2
    assert ablation_config("uar", VOCAB).first_stage() == 1
    with pytest.raises(RRGError, match="ablation row"):
        ablation_config("lsu+tir", VOCAB)


def test_identical_reports_are_not_negatives() -> None:
    reports = torch.tensor([[1, 5, 2], [1, 6, 2], [1, 5, 2]])
    assert same_reports(reports).tolist() == [[True, False, True], [False, True, False], [True, False, True]]


def test_pairs_marked_not_negative_leave_the_triplet_term() -> None:
    model = tiny().eval()
    tokens, reports = batch()
    assert float(model(tokens, reports).global_loss) > 0
    everyone = torch.ones(B, B, dtype=torch.bool)
    for hardest in (True, False):
        out = model(tokens, reports, hardest_negatives=hardest, not_negatives=everyone)
        assert float(out.global_loss) == 0.0


def test_training_studies_with_the_same_findings_are_grouped() -> None:
    from rrg_core.data.datasets import StudyRecord
    from train.uar.data import UARData, positive_sets

    records = [
        StudyRecord("a", "Small left pleural effusion. No pneumothorax.", ("a.png",), "train"),
        StudyRecord("b", "There is a left pleural effusion. Heart size is normal.", ("b.png",), "train"),
        StudyRecord("c", "The lungs are clear. No pleural effusion.", ("c.png",), "train"),
        # A reviewer's labels win over the report's reading.
        StudyRecord("d", "The lungs are clear.", ("d.png",), "train", {"labels": {"Pleural Effusion": 1}}),
    ]
    sets = positive_sets(records)
    assert sets.shape == (4, 14) and sets.dtype == torch.bool
    data = UARData(None, None, records, [], torch.empty(0), torch.empty(0), [], [], None, sets)
    same = data.same_findings(torch.tensor([0, 1, 2, 3]))
    assert same[0, 1] and not same[0, 2] and same[0, 3] and same.diagonal().all()


def test_report_global_ignores_padding() -> None:
    model = tiny().eval()
    short = torch.tensor([[1, 5, 6, 2]])
    padded = torch.tensor([[1, 5, 6, 2, 0, 0]])
    assert torch.allclose(model.report_global(short), model.report_global(padded), atol=1e-6)


@pytest.mark.parametrize(
    ("visual", "message"),
    [
        (torch.zeros(2, 1, GRID, GRID, dtype=torch.long), "shaped"),
        (torch.full((2, V, GRID, GRID), 16), r"\[0, 16\)"),
        (torch.zeros(2, V, 3, 32, 32), "attach"),
    ],
)
def test_bad_visual_input_is_refused(visual: torch.Tensor, message: str) -> None:
    with pytest.raises(RRGError, match=message):
        tiny()(visual, batch()[1][:2])


def test_bad_reports_and_configs_are_refused() -> None:
    tokens, _ = batch()
    with pytest.raises(RRGError, match="exceed max_length"):
        tiny()(tokens, torch.ones(B, 20, dtype=torch.long))
    with pytest.raises(RRGError, match="report ids"):
        tiny()(tokens, torch.ones(B, 1, dtype=torch.long))
    with pytest.raises(RRGError, match="divisible"):
        tiny_config(d_model=30)
    with pytest.raises(RRGError, match="mask_loss_reduction"):
        tiny_config(mask_loss_reduction="max")


def _vocab(size: int = VOCAB) -> Vocabulary:
    return Vocabulary([f"w{i}" for i in range(size - 4)])


def test_uar_checkpoint_round_trip_with_tokenizer(tmp_path) -> None:
    torch.manual_seed(0)
    dvae = DVAE(DVAEConfig(image_size=32, downsample=8, codebook_size=16, embed_dim=8, hidden=8))
    model = tiny().eval()
    model.attach_tokenizer(dvae)
    model.set_stage(2)
    with torch.no_grad():
        model.tir_mask.copy_(torch.randn(12, L))
    folder = save_uar(
        model, tmp_path / "uar", vocab=_vocab(), preprocess=PREPROCESS, extra_config={"stages": [1, 2]}
    )
    loaded, checkpoint = load_uar(folder)
    assert checkpoint.config["stages"] == [1, 2] and int(loaded.stage) == 2
    images = torch.randn(2, V, 3, 32, 32)
    a, b = model.generate(images, max_length=5), loaded.generate(images, max_length=5)
    assert a.tokens == b.tokens
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.attention, b.attention, strict=True))


def test_dvae_checkpoints_and_mismatched_codebooks_are_refused(tmp_path) -> None:
    torch.manual_seed(0)
    dvae = DVAE(DVAEConfig(image_size=32, downsample=8, codebook_size=32, embed_dim=8, hidden=8))
    folder = save_tokenizer(dvae, tmp_path / "dvae", preprocess=PREPROCESS, metrics={"perplexity": 3.0})
    loaded, _ = load_dvae(folder)
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.tokens(images), dvae.tokens(images))
    with pytest.raises(CheckpointError, match=r"dvae.*codebook of 32 codes.*expects 16"):
        load_tokenizer_for(tiny_config(), folder)
    assert load_tokenizer_for(tiny_config(codebook_size=32), folder).config.codebook_size == 32
    with pytest.raises(CheckpointError, match="expected 'uar'"):
        load_uar(folder)


def test_uar_checkpoint_faults_are_refused(tmp_path) -> None:
    model = tiny()
    with pytest.raises(RRGError, match="vocabulary has 10 tokens"):
        save_uar(model, tmp_path / "x", vocab=_vocab(10), preprocess=PREPROCESS)
    folder = save_uar(model, tmp_path / "uar", vocab=_vocab(), preprocess=PREPROCESS)
    config_file = folder / "config.json"
    document = json.loads(config_file.read_text())
    document["config"]["model"]["n_basis"] = 32  # weights no longer fit
    config_file.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_uar(folder)
    document["config"]["model"]["colour"] = "red"
    config_file.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="no valid UAR 'model' entry"):
        load_uar(folder)
