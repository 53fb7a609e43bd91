"""``python -m train dcrrg``: a micro run of all four steps, resuming, bad input, and the data helpers."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from rrg_core.labeler import label_sentence
from rrg_core.models.dcrrg import load_dcrrg
from rrg_core.observations import OBSERVATIONS, Label
from rrg_core.phantoms import write_phantoms
from train.__main__ import main
from train.common.runner import plan_steps
from train.dcrrg.data import NORMAL_SENTENCES, StudyLabels, balance_weights, description

# A tiny model: random image encoder at 64 px, tiny text encoder, one iteration per step.
_STEPS = [
    a for k in (1, 2, 3, 4) for a in ("--set", f"step{k}.max_iterations=1", "--set", f"step{k}.batch_size=4")
]
MICRO = [
    "--preset", "demo", "--pretrained", "none", "--text-encoder", "tiny-random", "--workers", "0",
    "--set", "image_size=64", "--set", "model.d_model=32", "--set", "model.d_ff=64",
    "--set", "model.projection_dim=32", "--set", "model.projection_hidden=32", "--set", "model.n_prefix=2",
    *_STEPS,
]  # fmt: skip


@pytest.fixture(scope="module")
def micro_run(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run") / "dcrrg"
    os.environ.setdefault("RRG_TRAIN_THREADS", "1")
    assert main(["dcrrg", "--data", str(phantoms), "--out", str(run), *MICRO]) == 0
    return run


def test_micro_run_writes_every_step_and_a_loadable_final_checkpoint(micro_run: Path) -> None:
    for k in (1, 2, 3, 4):
        assert (micro_run / f"step{k}" / "model.safetensors").is_file()
    model, checkpoint = load_dcrrg(micro_run)
    assert checkpoint.config["training"]["steps_done"] == [1, 2, 3, 4]
    assert checkpoint.config["training"]["preset"] == "demo"
    assert checkpoint.config["preprocess"]["image_size"] == 64  # what evaluation resizes images to
    assert set(checkpoint.metrics) == {"step1", "step2", "step3", "step4"}
    assert "thresholds" in checkpoint.metrics["step1"]
    step4 = checkpoint.metrics["step4"]  # the demo preset fine-tunes the decoder side
    assert step4["mode"] == "decoder" and 0 < step4["trainable_share"] < 1
    assert step4["description_weight"] == 1.0  # Step 3 rehearsed: the retrained decoder still describes
    assert (micro_run / "labels.json").is_file()
    ids = model.generate(torch.zeros(1, 2, 3, 64, 64), beam_size=2, max_length=8)
    assert len(ids) == 1


def test_rerun_skips_completed_steps(
    micro_run: Path, phantoms: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = {k: (micro_run / f"step{k}" / "model.safetensors").stat().st_mtime_ns for k in (1, 2, 3, 4)}
    with caplog.at_level(logging.INFO):
        assert main(["dcrrg", "--data", str(phantoms), "--out", str(micro_run), *MICRO]) == 0
    assert "is complete, skipped" in caplog.text
    after = {k: (micro_run / f"step{k}" / "model.safetensors").stat().st_mtime_ns for k in (1, 2, 3, 4)}
    assert before == after


def test_steps_3_4_resume_from_step2(
    micro_run: Path, phantoms: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "resumed"
    for k in (1, 2):
        shutil.copytree(micro_run / f"step{k}", run / f"step{k}")
    with caplog.at_level(logging.INFO):
        # the text view on (the demo preset has it off), so both Step-3 paths run; Step 4 in the
        # paper's form (prompt tuning), where the micro run takes the preset's decoder fine-tuning
        args = ["--steps", "3,4", *MICRO, "--set", "step3.text_view=true", "--set", "step3.balance=false"]
        assert main(["dcrrg", "--data", str(phantoms), "--out", str(run), *args, "--step4", "pt"]) == 0
    assert f"starting from {run / 'step2'}" in caplog.text
    assert (run / "step4" / "config.json").is_file()
    checkpoint = load_dcrrg(run)[1]
    assert checkpoint.config["training"]["steps_done"] == [1, 2, 3, 4]
    prompt_tuned = checkpoint.metrics["step4"]
    decoder_tuned = load_dcrrg(micro_run)[1].metrics["step4"]
    assert prompt_tuned["mode"] == "pt" and prompt_tuned["description_weight"] == 0.0
    assert 0 < prompt_tuned["trainable_share"] < decoder_tuned["trainable_share"]


@pytest.mark.parametrize(
    "change",
    [
        {"--preset": "huge"},
        {"--data": "/nonexistent/data"},
        {"--set": "step1.no_such_key=3"},
        {"--steps": "4,3"},
    ],
)
def test_bad_input_exits_2(change: dict[str, str], phantoms: Path, tmp_path: Path, capsys) -> None:
    args = {"--preset": "demo", "--data": str(phantoms), "--out": str(tmp_path / "run"), **change}
    assert main(["dcrrg", *(x for pair in args.items() for x in pair)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_data_without_images_exits_2(phantoms: Path, tmp_path: Path) -> None:
    data = tmp_path / "reports_only"
    data.mkdir()
    shutil.copy(phantoms / "annotation.json", data / "annotation.json")
    assert main(["dcrrg", "--preset", "demo", "--data", str(data), "--out", str(tmp_path / "run")]) == 2


def test_normal_sentences_are_negative_for_their_observation() -> None:
    for name, sentence in NORMAL_SENTENCES.items():
        if name == "Lung Opacity":  # CheXpert's lists have no "clear": unmentioned, never asserted
            assert name not in label_sentence(sentence), sentence
        elif name != "No Finding":  # a report-level conclusion, not a sentence label
            assert label_sentence(sentence)[name] == Label.NEGATIVE, sentence


def test_descriptions_follow_table_7() -> None:
    labels = dict.fromkeys(OBSERVATIONS)
    labels["Pleural Effusion"] = 1
    study = StudyLabels(labels, {"Pleural Effusion": ["small left pleural effusion."]})
    assert description(study, "Pleural Effusion") == "small left pleural effusion."
    assert description(study, "Pneumothorax") == NORMAL_SENTENCES["Pneumothorax"]
    assert description(study, "No Finding") == ""  # abnormal study: no true normal sentence
    normal = StudyLabels({**dict.fromkeys(OBSERVATIONS), "No Finding": 1}, {})
    assert description(normal, "No Finding") == NORMAL_SENTENCES["No Finding"]


def test_balance_weights_give_both_classes_equal_weight() -> None:
    targets = torch.tensor([[1.0], [0.0], [0.0], [0.0], [1.0]]).expand(5, 14).clone()
    keep = torch.ones(5, 14, dtype=torch.bool)
    keep[3, 0] = False  # an uncertain label is dropped
    weights = balance_weights(targets, keep, balance=True)
    assert weights[3, 0] == 0
    assert torch.allclose((weights * targets).sum(0), (weights * (1 - targets)).sum(0))
    assert torch.equal(balance_weights(targets, keep, balance=False), keep.float())


def test_plan_steps(tmp_path: Path) -> None:
    for k in (1, 2):
        (tmp_path / f"step{k}").mkdir()
        (tmp_path / f"step{k}" / "config.json").write_text("{}")
        (tmp_path / f"step{k}" / "model.safetensors").write_text("")
    plan = plan_steps(tmp_path, [1, 2, 3, 4])
    assert plan.todo == (3, 4) and plan.skipped == (1, 2) and plan.start_from == tmp_path / "step2"
    assert plan_steps(tmp_path, [3, 4]).start_from == tmp_path / "step2"
    assert plan_steps(tmp_path / "empty", [1]).start_from is None


# The quality bar for the demo preset on phantoms (here the 1,000-study set, 188 test
# studies): Step-1 mean AUROC >= 0.95 and CE micro F1 >= 0.8 of the generated full reports. It is
# not met (last measured: AUROC 0.92, CE micro F1 0.63). Step 1 bounds it: at 128 px a rib fracture
# stays near chance (AUROC 0.55-0.65) and Lung Opacity near 0.86 even with three times the studies
# and twice the Step-1 compute, which leaves mean AUROC 0.949 on val. The run takes minutes, so the
# test is opt-in: RRG_DEMO_QUALITY=1 pytest tests/test_train_dcrrg.py -k demo_quality.
@pytest.mark.skipif(not os.environ.get("RRG_DEMO_QUALITY"), reason="slow (minutes): set RRG_DEMO_QUALITY=1")
def test_demo_quality(tmp_path: Path) -> None:
    from train.dcrrg.check import score_run

    data = tmp_path / "phantoms"
    write_phantoms(data, n=1000, seed=0, size=128, workers=2)
    run = tmp_path / "run"
    assert main(["dcrrg", "--preset", "demo", "--data", str(data), "--out", str(run), "--workers", "1"]) == 0
    scores = score_run(run, data, "test")
    assert scores["auroc_mean"] >= 0.95, scores
    assert scores["ce_micro_f1"] >= 0.8, scores


def test_step1_from_cached_early_layers_matches_step1_loss() -> None:
    from rrg_core.models.dcrrg import DCRRG, DCRRGConfig, losses
    from rrg_core.models.dcrrg.config import DCCLIPConfig
    from train.dcrrg.frozen_layers import freeze_early_image_layers

    torch.manual_seed(0)
    clip = DCCLIPConfig(pretrained=None, text_encoder="tiny-random", projection_dim=32, projection_hidden=32)
    model = DCRRG(DCRRGConfig(vocab_size=20, clip=clip, d_model=32, n_heads=4, d_ff=64, n_prefix=2))
    model.eval()
    images = torch.randn(3, 2, 3, 64, 64)
    targets = (torch.rand(3, 14) > 0.5).float()
    weights = torch.rand(3, 14)
    with torch.no_grad():
        early = model.clip.image_encoder.split_at(5)[0](images.flatten(0, 1)).unflatten(0, (3, 2))
        whole = model.clip.encode_image(images)[0]
        expected = losses.observation_loss(model.clip, whole, "image", targets, weights)
        pooled = model.clip.encode_image(early, from_block=5)[0]
        got = losses.observation_loss(model.clip, pooled, "image", targets, weights)
        torch.testing.assert_close(got, expected)
    model.clip.requires_grad_(True)
    frozen = freeze_early_image_layers(model, 5)
    body = model.clip.image_encoder.body
    assert frozen > 0 and not any(p.requires_grad for p in body.conv_stem.parameters())
    assert all(p.requires_grad for p in body.conv_head.parameters())
    assert freeze_early_image_layers(model, None) == 0
    with pytest.raises(ValueError):
        freeze_early_image_layers(model, 99)


def test_train_from_block_is_a_step1_and_step2_setting() -> None:
    from rrg_core.errors import RRGError
    from train.dcrrg.presets import apply_overrides, load_preset

    preset = apply_overrides(load_preset("cpu"), ["step1.train_from_block=4", "step2.train_from_block=6"])
    assert preset.step(1).train_from_block == 4
    assert preset.step(2).train_from_block == 6
    for bad in ("-1", "1.5", "true"):
        with pytest.raises(RRGError):
            apply_overrides(load_preset("cpu"), [f"step1.train_from_block={bad}"])
    with pytest.raises(RRGError):
        apply_overrides(load_preset("cpu"), ["step3.train_from_block=4"])


def test_step4_mode_comes_from_the_flag_then_the_preset_then_prompt_tuning() -> None:
    from rrg_core.errors import RRGError
    from train.dcrrg.presets import apply_overrides, load_preset, step4_mode

    plain = apply_overrides(load_preset("paper"), [])  # the paper's preset names no mode: P-Tuning v2
    assert step4_mode(plain, None) == "pt"
    chosen = apply_overrides(load_preset("paper"), ["step4.mode=decoder"])
    assert chosen.step(4).mode == "decoder"
    assert step4_mode(chosen, None) == "decoder" and step4_mode(chosen, "fft") == "fft"
    demo = apply_overrides(load_preset("demo"), [])
    assert step4_mode(demo, None) == "decoder" and step4_mode(demo, "pt") == "pt"
    with pytest.raises(RRGError, match=r"step4\.mode"):
        apply_overrides(load_preset("demo"), ["step4.mode=lora"])
    with pytest.raises(RRGError):
        apply_overrides(load_preset("demo"), ["step3.mode=pt"])


def test_description_weight_defaults_by_step4_mode_and_is_checked() -> None:
    """Step 3 is rehearsed where Step 4 retrains the decoder on our side (decoder mode), not in the
    paper's forms unless set for FFT (Table 4 trains it without), never in PT (decoder frozen)."""
    from rrg_core.errors import RRGError
    from train.dcrrg.presets import apply_overrides, load_preset
    from train.dcrrg.steps import description_weight

    assert description_weight(_s4(), "decoder") == 1.0
    assert description_weight(_s4(), "pt") == description_weight(_s4(), "fft") == 0.0
    assert description_weight(_s4(description_weight=0.5), "fft") == 0.5
    assert description_weight(_s4(description_weight=0.5), "pt") == 0.0  # a frozen decoder forgets nothing
    chosen = apply_overrides(load_preset("paper"), ["step4.description_weight=2"])
    assert chosen.step(4).description_weight == 2
    for bad in ("-1", "true"):
        with pytest.raises(RRGError, match="description_weight"):
            apply_overrides(load_preset("demo"), [f"step4.description_weight={bad}"])
    with pytest.raises(RRGError):
        apply_overrides(load_preset("demo"), ["step3.description_weight=1"])


def _s4(**values: float):
    from train.dcrrg.presets import Step4Settings

    return Step4Settings(epochs=1, batch_size=1, lr=1e-3, **values)


def test_text_layers_freeze_and_the_text_encoder_gets_its_own_rate() -> None:
    from rrg_core.errors import RRGError
    from rrg_core.models.dcrrg import DCRRG, DCRRGConfig
    from rrg_core.models.dcrrg.config import DCCLIPConfig
    from train.dcrrg.frozen_layers import freeze_early_text_layers
    from train.dcrrg.presets import Step1Settings
    from train.dcrrg.steps import _parameter_groups

    clip = DCCLIPConfig(pretrained=None, text_encoder="tiny-random", projection_dim=16, projection_hidden=16)
    model = DCRRG(DCRRGConfig(vocab_size=20, clip=clip, d_model=32, n_heads=4, d_ff=64, n_prefix=2))
    model.requires_grad_(True)
    network = model.clip.text_encoder.model
    layers = list(network.encoder.layer)
    assert freeze_early_text_layers(model, None) == 0
    assert freeze_early_text_layers(model, 0) == 0  # 0, like None: every layer trains
    frozen = freeze_early_text_layers(model, len(layers))
    assert frozen == sum(p.numel() for m in [network.embeddings, *layers] for p in m.parameters())
    assert any(p.requires_grad for p in network.parameters())  # the pooler or head above still trains
    with pytest.raises(RRGError, match="past the text encoder"):
        freeze_early_text_layers(model, len(layers) + 1)
    groups = _parameter_groups(model, Step1Settings(epochs=1, batch_size=1, lr=1e-3, text_lr=5e-5))
    text = {id(p) for p in network.parameters() if p.requires_grad}
    assert [g["lr"] for g in groups] == [1e-3, 5e-5]
    assert {id(p) for p in groups[1]["params"]} == text and not text & {id(p) for p in groups[0]["params"]}
    assert len(_parameter_groups(model, Step1Settings(epochs=1, batch_size=1, lr=1e-3))) == 1


def test_schedule_setting_and_exponent_values() -> None:
    from rrg_core.errors import RRGError
    from train.dcrrg.presets import apply_overrides, load_preset

    preset = apply_overrides(load_preset("cpu"), ["step4.schedule=cosine", "step4.lr=2e-3"])
    assert preset.step(4).schedule == "cosine"
    assert preset.step(4).lr == pytest.approx(0.002)  # YAML 1.1 reads "2e-3" as a string
    with pytest.raises(RRGError, match="schedule"):
        apply_overrides(load_preset("cpu"), ["step4.schedule=linear"])


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    from train.common.runner import learning_rate_schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert learning_rate_schedule(optimizer, "constant", 100) is None
    scheduler = learning_rate_schedule(optimizer, "cosine", 100, warmup=0.1)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.1) and max(rates) == pytest.approx(1.0)
    assert rates.index(max(rates)) == 9 and rates[-1] < 0.01  # the 10th step reaches the peak
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    with pytest.raises(ValueError):
        learning_rate_schedule(optimizer, "linear", 100)


def test_weighted_index_batches_never_draw_zero_weights() -> None:
    from train.common.distributed import DistInfo
    from train.common.runner import index_batches

    info = DistInfo()
    weights = torch.tensor([0.0, 1.0, 0.0, 3.0])
    stream = index_batches(4, 2, torch.Generator().manual_seed(0), info, weights)
    drawn = torch.cat([next(stream) for _ in range(200)])
    assert set(drawn.tolist()) == {1, 3}
    assert 0.6 < (drawn == 3).float().mean().item() < 0.9  # 3:1 odds
    for bad in (torch.zeros(4), torch.tensor([1.0, -1.0, 1.0, 1.0]), torch.ones(3)):
        with pytest.raises(ValueError):
            next(index_batches(4, 2, torch.Generator(), info, bad))


def test_description_weights_balance_mentioned_findings_per_observation() -> None:
    from train.dcrrg.data import description_weights

    def study(**labels: int) -> StudyLabels:
        return StudyLabels({k: labels.get(k.replace(" ", "_")) for k in OBSERVATIONS}, {})

    studies = [study(Edema=1), study(Edema=-1), study(), study(), study(), study(Edema=0)]
    weights = description_weights(studies, balance=True)
    edema = OBSERVATIONS.index("Edema")
    mentioned = weights[:2, edema].sum()
    assert mentioned == pytest.approx(weights[2:, edema].sum())  # half the weight on the findings
    assert weights[:, edema].sum() == pytest.approx(len(studies))
    # an observation no report mentions cannot be balanced: uniform
    assert torch.equal(weights[:, OBSERVATIONS.index("Fracture")], torch.ones(len(studies)))
    assert torch.equal(description_weights(studies, balance=False), torch.ones(len(studies), 14))


def test_micro_run_writes_training_curves(micro_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(micro_run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"step{k}/{kind}" for k in (1, 2, 3, 4) for kind in ("loss", "lr")} <= tags
    if load_dcrrg(micro_run)[1].metrics["step1"].get("val_auroc_mean") is not None:
        assert "val/auroc_mean" in tags
    steps = [e.step for k in (1, 2, 3, 4) for e in events.Scalars(f"step{k}/loss")]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one global step across the steps


def test_unknown_preset_keys_are_refused_by_name() -> None:
    from rrg_core.errors import RRGError
    from train.dcrrg.presets import apply_overrides, load_preset

    with pytest.raises(RRGError, match=r"step1\.no_such_key.*valid keys in step1: .*batch_size"):
        apply_overrides(load_preset("demo"), ["step1.no_such_key=3"])
    assert apply_overrides(load_preset("demo"), ["model.threshold=0.3"]).model.threshold == 0.3
