"""DCCLIP and DCRRG wiring on tiny random models: every step's loss, freezing, generation, Table 7."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional

from rrg_core.models.dcrrg import DCRRG, FULL_REPORT, DCRRGConfig
from rrg_core.models.dcrrg import losses as dcrrg_losses
from rrg_core.models.dcrrg.config import DCCLIPConfig
from rrg_core.models.dcrrg.dcclip import DCCLIP
from rrg_core.observations import NUM_OBSERVATIONS

VOCAB, MAX_LEN, SIDE = 30, 12, 64
TEXTS = ["no acute findings .", "small left pleural effusion .", "heart size is enlarged .", "clear lungs ."]


def step1(clip, inputs, observation_index, targets, keep=None):
    """Step 1's loss of images (a tensor) or texts (a list) through the whole encoder."""
    return dcrrg_losses.observation_loss(clip, *clip.encode(inputs), targets, keep, observation_index)


def step2(clip, studies, texts, image_labels, text_labels):
    """Step 2's CSM loss of paired studies and reports through the whole encoders."""
    assert torch.equal(image_labels, text_labels)  # DCRRG pairs carry the report's labels on both sides
    return dcrrg_losses.step2_loss(clip, clip.encode_image(studies)[0], clip.encode_text(texts), image_labels)


def tiny_clip_config() -> DCCLIPConfig:
    return DCCLIPConfig(
        pretrained=None,
        text_encoder="tiny-random",
        text_max_length=32,
        projection_dim=64,
        projection_hidden=256,
    )


def tiny_config() -> DCRRGConfig:
    return DCRRGConfig(
        vocab_size=VOCAB,
        clip=tiny_clip_config(),
        d_model=32,
        n_heads=4,
        d_ff=64,
        max_length=MAX_LEN,
        n_prefix=4,
    )


@pytest.fixture
def model() -> DCRRG:
    torch.manual_seed(0)
    return DCRRG(tiny_config())


def images(n: int, views: int | None = None) -> torch.Tensor:
    shape = (n, 3, SIDE, SIDE) if views is None else (n, views, 3, SIDE, SIDE)
    return torch.randn(shape)


def report_ids(n: int, length: int = 8) -> torch.Tensor:
    ids = torch.randint(3, VOCAB, (n, length))
    ids[:, 0], ids[:, -1] = 1, 2
    ids[0, -3:] = torch.tensor([2, 0, 0])  # one padded row
    return ids


def _grads(module: torch.nn.Module) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters()]


def test_every_step_loss_is_a_finite_scalar(model: DCRRG) -> None:
    clip, n = model.clip, 4
    index = torch.tensor([0, 3, 8, 13])
    targets, keep = torch.tensor([1, 0, 1, 0]), torch.tensor([True, True, False, True])
    labels = (torch.rand(n, NUM_OBSERVATIONS) > 0.5).float()
    losses = {
        "step1 image": step1(clip, images(n), index, targets, keep),
        "step1 image, all 14": step1(clip, images(n), None, labels, torch.ones(n, NUM_OBSERVATIONS)),
        "step1 text": step1(clip, TEXTS, index, targets),
        "step2": step2(clip, images(n), TEXTS, labels, labels),
        "step3 image": dcrrg_losses.step3_loss(model, images(n), index, report_ids(n)),
        "step3 text": dcrrg_losses.step3_loss(model, TEXTS, index, report_ids(n)),
        "step4": dcrrg_losses.step4_loss(model, images(n), report_ids(n)),
    }
    for name, loss in losses.items():
        assert loss.dim() == 0 and torch.isfinite(loss), name


def test_step1_drops_uncertain_labels(model: DCRRG) -> None:
    loss = step1(
        model.clip, images(2), torch.tensor([1, 2]), torch.tensor([1, 0]), torch.tensor([False, False])
    )
    assert loss.item() == 0.0


def test_step2_trains_the_temperature_and_uses_the_zero_prompt(model: DCRRG) -> None:
    clip = model.clip
    labels = torch.eye(4, NUM_OBSERVATIONS)
    step2(clip, images(4), TEXTS, labels, labels).backward()
    assert clip.logit_scale.grad is not None and clip.logit_scale.grad != 0
    clip.eval()
    uni = torch.randn(3, clip.image_encoder.out_channels)
    zero = clip.image_projection(uni, torch.zeros(3, NUM_OBSERVATIONS))
    assert torch.allclose(clip.global_embedding(uni, "image"), zero)


def test_observation_probabilities(model: DCRRG) -> None:
    model.eval()
    probs = model.clip.observation_probabilities(images(3))
    assert probs.shape == (3, NUM_OBSERVATIONS) and bool(((probs >= 0) & (probs <= 1)).all())


def test_prompt_tuning_trains_only_prompts_and_new_head(model: DCRRG) -> None:
    old_head = model.decoder.head
    trainable, total, share = model.enable_prompt_tuning()
    print(f"\nprompt tuning trains {trainable} of {total} parameters ({100 * share:.3f}%)")
    assert 0 < share < 0.01
    assert model.decoder.head is old_head and model.report_head is not old_head
    dcrrg_losses.step4_loss(model, images(2), report_ids(2)).backward()
    assert all(_grads(model.deep_prompts)) and all(_grads(model.report_head))
    assert model.report_prompt.grad is not None
    for frozen in (model.clip, model.decoder, model.image_memory, model.observation_prompts):
        assert not any(p.requires_grad for p in frozen.parameters())
        assert all(p.grad is None for p in frozen.parameters())
    assert model.decoder.head is old_head  # the Step-3 head is back after the call


def test_full_finetuning_trains_image_encoder_and_decoder(model: DCRRG) -> None:
    model.enable_prompt_tuning()
    share = model.enable_full_finetuning()[2]
    assert share == 1.0 and not bool(model.use_deep_prompts)
    dcrrg_losses.step4_loss(model, images(2), report_ids(2)).backward()
    for part in (model.clip.image_encoder, model.image_memory, model.decoder.layers, model.report_head):
        assert any(_grads(part)), type(part).__name__
    assert model.deep_prompts.prefix.grad is None  # FFT runs without the deep prompts


def test_decoder_finetuning_trains_the_decoder_side_only(model: DCRRG) -> None:
    share = model.enable_decoder_finetuning()[2]
    assert 0 < share < 1 and not bool(model.use_deep_prompts)
    assert not any(p.requires_grad for p in model.clip.parameters())
    dcrrg_losses.step4_loss(model, images(2), report_ids(2)).backward()
    for part in (model.image_memory, model.observation_memory, model.decoder.layers, model.report_head):
        assert any(_grads(part)), type(part).__name__


def test_enable_step4_gives_each_command_line_mode_its_trainable_set(model: DCRRG) -> None:
    from train.dcrrg.presets import STEP4_MODES

    shares = {mode: model.enable_step4(mode)[2] for mode in STEP4_MODES}
    assert 0 < shares["pt"] < shares["decoder"] < shares["fft"] == 1.0
    with pytest.raises(ValueError, match="lora"):
        model.enable_step4("lora")


def _check_sequences(sequences: list[list[int]], n: int, limit: int) -> None:
    assert len(sequences) == n
    for seq in sequences:
        assert 0 < len(seq) <= limit
        assert seq[-1] == 2 or len(seq) == limit
        assert 2 not in seq[:-1] and 1 not in seq and 0 not in seq


def test_generate_reports_and_descriptions(model: DCRRG) -> None:
    model.enable_prompt_tuning()
    model.eval()
    _check_sequences(model.generate(images(2), beam_size=3, max_length=6), 2, 6)
    _check_sequences(model.generate(images(2), beam_size=2, observation=4), 2, MAX_LEN)
    with pytest.raises(ValueError, match="observation"):
        model.generate(images(1), observation=FULL_REPORT + 1)


def test_describe_gives_table7_rows(model: DCRRG) -> None:
    model.eval()
    batch = images(2)
    table = model.describe(batch, beam_size=2, max_length=5)
    assert len(table.description_ids) == 2 and table.probabilities.shape == (2, NUM_OBSERVATIONS)
    with torch.no_grad():
        probs = model.clip.observation_probabilities(batch)
    assert torch.allclose(table.probabilities, probs, atol=1e-5)
    assert torch.equal(table.labels, (table.probabilities >= 0.5).long())
    for ids in table.description_ids:
        assert len(ids) == NUM_OBSERVATIONS
        _check_sequences(ids, NUM_OBSERVATIONS, 5)
    model.set_thresholds([0.0] * NUM_OBSERVATIONS)
    assert bool((model.describe(batch, beam_size=1, max_length=2).labels == 1).all())
    with pytest.raises(ValueError, match="thresholds"):
        model.set_thresholds([0.5] * 3)
    assert "thresholds" in model.state_dict()


def test_two_view_studies(model: DCRRG) -> None:
    model.eval()
    studies = images(2, views=2)
    pooled, fmap = model.clip.encode_image(studies)
    single_pooled, single_map = model.clip.encode_image(studies[:, 1])
    assert pooled.shape == single_pooled.shape
    assert fmap.shape[:3] == single_map.shape[:3] and fmap.shape[3] == 2 * single_map.shape[3]
    assert torch.allclose(fmap[..., single_map.shape[3] :], single_map, atol=1e-5)
    both = (model.clip.encode_image(studies[:, 0])[0] + single_pooled) / 2
    assert torch.allclose(pooled, both, atol=1e-5)
    assert torch.isfinite(dcrrg_losses.step4_loss(model, studies, report_ids(2)))
    _check_sequences(model.generate(studies, beam_size=2, max_length=4), 2, 4)


def test_step1_head_overfits_eight_images() -> None:
    """The Step-1 wiring learns: 8 fixed images, all 14 fixed labels each, training accuracy 1.0.

    The (random) image encoder is frozen to keep the test fast; projection and head do the fitting.
    Images are smooth (upsampled 4x4 noise) so that their pooled features differ like real images'.
    """
    torch.manual_seed(0)
    config = tiny_clip_config()
    config.dropout = 0.0  # dropout fights memorisation; this test only asks whether the wiring learns
    clip = DCCLIP(config).train()
    clip.image_encoder.requires_grad_(False)
    batch = functional.interpolate(torch.randn(8, 3, 4, 4), size=32, mode="bilinear")
    labels = (torch.rand(8, NUM_OBSERVATIONS) > 0.5).long()
    optimiser = torch.optim.Adam([p for p in clip.parameters() if p.requires_grad], lr=1e-3)
    accuracy, steps = 0.0, 0
    while accuracy < 1.0 and steps < 40:
        optimiser.zero_grad()
        step1(clip, batch, None, labels).backward()
        optimiser.step()
        steps += 1
        with torch.no_grad():
            logits = clip.observation_logits(clip.encode_image(batch)[0], "image")
        accuracy = (logits.argmax(dim=-1) == labels).float().mean().item()
    print(f"\nStep-1 overfit: accuracy {accuracy:.3f} after {steps} steps")
    assert accuracy == 1.0


def test_cached_encoder_features_give_the_same_losses_and_memory(model: DCRRG) -> None:
    from rrg_core.models.dcrrg import EncoderFeatures

    model.eval()  # no dropout: the image, text and cached paths must agree exactly
    n, index = len(TEXTS), torch.arange(len(TEXTS))
    studies = images(n, views=2)
    ids = report_ids(n)
    with torch.no_grad():
        image_features = model.features(studies)
        text_features = model.features(TEXTS)
    assert image_features.attention_mask is None and image_features.states.dim() == 4
    assert not image_features.states.requires_grad
    with torch.no_grad():
        step3, step4 = dcrrg_losses.step3_loss, dcrrg_losses.step4_loss
        for direct, cached in (
            (step3(model, studies, index, ids), step3(model, image_features, index, ids)),
            (step3(model, TEXTS, index, ids), step3(model, text_features, index, ids)),
            (step4(model, studies, ids), step4(model, image_features, ids)),
        ):
            torch.testing.assert_close(direct, cached)
        memory, mask = model.memory(studies)
        cached_memory, cached_mask = model.memory(image_features)
        torch.testing.assert_close(memory, cached_memory)
        assert mask is None and cached_mask is None
    assert isinstance(text_features, EncoderFeatures)
    # gradients reach the decoder through cached features
    model.train()
    model.freeze_encoders()
    dcrrg_losses.step3_loss(model, image_features, index, ids).backward()
    assert any(_grads(model.decoder)) and any(_grads(model.image_memory))


def test_memory_starts_with_the_observation_rows_step1_reads(model: DCRRG) -> None:
    model.eval()
    studies = images(2, views=2)
    with torch.no_grad():
        features = model.features(studies)
        memory, _ = model.memory(features)
        spatial = features.states.shape[2] * features.states.shape[3]
        assert memory.shape[1] == NUM_OBSERVATIONS + spatial
        # the observation rows follow the Step-1 projection head; the map rows do not
        model.clip.image_projection.net[-1].bias.add_(1.0)
        changed, _ = model.memory(features)
    assert not torch.allclose(changed[:, :NUM_OBSERVATIONS], memory[:, :NUM_OBSERVATIONS])
    torch.testing.assert_close(changed[:, NUM_OBSERVATIONS:], memory[:, NUM_OBSERVATIONS:])
    text_memory, text_mask = model.memory(TEXTS[:2])
    assert text_mask[:, :NUM_OBSERVATIONS].all() and text_memory.shape[1] == text_mask.shape[1]


def test_observation_rows_can_be_switched_off() -> None:
    config = dataclasses.replace(tiny_config(), observation_rows=False)
    plain = DCRRG(config).eval()
    features = plain.features(images(1, views=2))
    memory, _ = plain.memory(features)
    assert memory.shape[1] == features.states.shape[2] * features.states.shape[3]


def test_the_image_side_from_cached_early_layers_equals_the_whole_encoder(model: DCRRG) -> None:
    # Training freezes the first blocks and caches their output; the rest must give the same embedding.
    model.eval()
    studies = images(2, views=2)
    encoder = model.clip.image_encoder
    try:
        early, _ = encoder.split_at(4)
    except ValueError:
        pytest.skip("the tiny test model's encoder has no EfficientNet blocks")
    with torch.no_grad():
        cached = early(studies.flatten(0, 1)).unflatten(0, studies.shape[:2])
        # float rounding only: the same layers, run in two parts (as the channels-last test allows)
        in_parts, whole = model.clip.encode_image(cached, from_block=4), model.clip.encode_image(studies)
        torch.testing.assert_close(in_parts, whole, atol=1e-4, rtol=1e-4)
