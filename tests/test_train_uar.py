"""``python -m train uar`` / ``dvae``: a micro run of every stage, resuming, bad input, evaluation, DDP."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from rrg_core.errors import RRGError
from rrg_core.models.uar.io import load_dvae, load_uar
from train.__main__ import main
from train.uar.presets import build_preset, dvae_config, tokenizer_config, uar_config

# A micro model: 32 px, M = 8 (4 x 4 tokens per view), 16-code dVAE, d 16, two iterations per stage.
MICRO = [
    "--preset", "demo", "--workers", "0", "--set", "tokenizer=dvae", "--set", "dvae.downsample=8",
    "--set", "image_size=32", "--set", "train_resize=32",
    "--set", "dvae.hidden=4", "--set", "dvae.embed_dim=4", "--set", "dvae.codebook_size=16",
    "--set", "dvae.batch_size=8", "--set", "dvae.max_iterations=2", "--set", "dvae.reconstructions=2",
    "--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.d_ff=32",
    "--set", "model.n_basis=32",
    "--set", "stage1.batch_size=4", "--set", "stage1.max_iterations=2",
    "--set", "stage2.batch_size=4", "--set", "stage2.max_iterations=2", "--set", "beam_size=1",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def micro_run(phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run") / "uar"
    os.environ.setdefault("RRG_TRAIN_THREADS", "1")
    assert main(["uar", "--data", str(phantoms), "--out", str(run), *MICRO]) == 0
    return run


def _mtimes(run: Path) -> dict[str, int]:
    return {
        name: (run / name / "model.safetensors").stat().st_mtime_ns
        for name in ("tokenizer", "step1", "step2")
    }


def test_micro_run_writes_every_stage_and_a_loadable_checkpoint(micro_run: Path) -> None:
    assert (micro_run / "tokenizer" / "reconstructions" / "reconstruction_00.png").is_file()
    dvae, dvae_checkpoint = load_dvae(micro_run / "tokenizer")
    assert dvae.config.codebook_size == 16 and "val_perplexity" in dvae_checkpoint.metrics["training"]
    assert dvae_checkpoint.config["preprocess"]["image_size"] == 32
    for k in (1, 2):
        assert (micro_run / f"step{k}" / "model.safetensors").is_file()
    model, checkpoint = load_uar(micro_run)
    assert int(model.stage) == 2 and model.tokenizer is not None
    assert checkpoint.config["training"]["stages_done"] == [1, 2]
    assert checkpoint.config["preprocess"] == {
        "image_size": 32,
        "channels": 1,
        "mean": [0.5],
        "std": [0.5],
        "views": 2,
    }
    assert set(checkpoint.metrics) == {"stage1", "stage2"}
    assert checkpoint.metrics["stage1"]["lambdas"] == [1.0, 1.0, 0.0]
    assert checkpoint.metrics["stage2"]["lambdas"] == [1.0, 1.0, 1.0]
    assert "val_ce" in checkpoint.metrics["stage2"]
    out = model.generate(torch.zeros(1, 2, 1, 32, 32), beam_size=1, max_length=5)
    assert out.attention[0].shape[1:] == (2, 4, 4)


def test_rerun_skips_finished_stages(
    micro_run: Path, phantoms: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = _mtimes(micro_run)
    with caplog.at_level(logging.INFO):
        assert main(["uar", "--data", str(phantoms), "--out", str(micro_run), *MICRO]) == 0
    assert "nothing to do" in caplog.text
    assert _mtimes(micro_run) == before


def test_stage_2_resumes_from_step1(
    micro_run: Path, phantoms: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "resumed"
    for name in ("tokenizer", "step1"):
        shutil.copytree(micro_run / name, run / name)
    with caplog.at_level(logging.INFO):
        assert main(["uar", "--data", str(phantoms), "--out", str(run), "--stages", "2", *MICRO]) == 0
    assert f"starting from {run / 'step1'}" in caplog.text
    assert load_uar(run)[1].config["training"]["stages_done"] == [1, 2]


def test_a_stage_trained_on_another_dvae_is_refused(
    micro_run: Path, phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "mixed"
    for name in ("tokenizer", "step1"):
        shutil.copytree(micro_run / name, run / name)
    config = run / "step1" / "config.json"
    document = json.loads(config.read_text())
    document["config"]["tokenizer_sha256"] = "0" * 64
    config.write_text(json.dumps(document))
    assert main(["uar", "--data", str(phantoms), "--out", str(run), "--stages", "2", *MICRO]) == 2
    assert "another tokenizer" in capsys.readouterr().err


def test_stages_without_a_dvae_are_refused(
    phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        main(["uar", "--data", str(phantoms), "--out", str(tmp_path / "run"), "--stages", "1", *MICRO]) == 2
    )
    assert "no LSU tokenizer" in capsys.readouterr().err


def test_dvae_command_and_its_reuse_by_uar(
    phantoms: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "dvae"
    assert main(["dvae", "--data", str(phantoms), "--out", str(folder), *MICRO]) == 0
    printed = capsys.readouterr().out
    assert "val reconstruction MSE" in printed and "code perplexity" in printed
    assert len(list((folder / "reconstructions").glob("*.png"))) == 2
    _, checkpoint = load_dvae(folder)
    assert checkpoint.kind == "dvae" and 1 <= checkpoint.metrics["training"]["val_perplexity"] <= 16
    probe = checkpoint.metrics["training"]["findings_probe"]  # the demo preset's token probe
    assert probe["settings"]["epochs"] == 5 and len(probe["per_observation"]) == 14
    with caplog.at_level(logging.INFO):
        assert main(["dvae", "--data", str(phantoms), "--out", str(folder), *MICRO]) == 0
    assert "already holds a trained dVAE" in caplog.text
    run = tmp_path / "uar"
    args = ["uar", "--data", str(phantoms), "--out", str(run), "--stages", "1", "--dvae", str(folder), *MICRO]
    assert main(args) == 0
    assert (run / "step1" / "config.json").is_file() and not (run / "tokenizer").exists()


def test_one_stage_ablation_row_trains_stage_2_only(phantoms: Path, tmp_path: Path) -> None:
    run = tmp_path / "row"
    assert main(["uar", "--data", str(phantoms), "--out", str(run), *MICRO, "--set", "ablation=lsu_cra"]) == 0
    assert not (run / "step1").exists()
    model, checkpoint = load_uar(run)
    assert model.tir_mask is None and model.cra is not None
    assert checkpoint.metrics["stage2"]["mask_loss"] == 0.0


def test_findings_head_trains_and_reports_its_val_auroc(phantoms: Path, tmp_path: Path) -> None:
    run = tmp_path / "findings"
    args = ["uar", "--data", str(phantoms), "--out", str(run), *MICRO, "--set", "model.lambda_findings=1"]
    assert main(args) == 0
    model, checkpoint = load_uar(run)
    assert model.findings_head is not None and checkpoint.config["model"]["lambda_findings"] == 1.0
    for stage in ("stage1", "stage2"):
        metrics = checkpoint.metrics[stage]
        assert metrics["findings_loss"] > 0
        auroc = metrics["val_findings_auroc"]  # None where no observation has both classes in val
        assert auroc is None or 0.0 <= auroc <= 1.0


@pytest.mark.parametrize(
    ("command", "change", "message"),
    [
        ("uar", {"--preset": "huge"}, "unknown uar preset 'huge'"),
        ("dvae", {"--preset": "huge"}, "unknown uar preset 'huge'"),
        ("uar", {"--data": "/nonexistent/data"}, "data folder /nonexistent/data not found"),
        ("dvae", {"--data": "/nonexistent/data"}, "data folder /nonexistent/data not found"),
        ("uar", {"--set": "stage1.no_such_key=3"}, "unknown preset key(s) stage1.no_such_key"),
        ("uar", {"--set": "stage1.lr=-1"}, "stage1.lr must be a positive number"),
        ("uar", {"--set": "model.colour=red"}, "colour"),
        ("uar", {"--set": "ablation=lsu+tir"}, "ablation must be one of"),
        ("uar", {"--set": "nonsense"}, "--set expects key=value"),
        ("uar", {"--stages": "2,1"}, "--stages must list some of tokenizer,1,2"),
        ("uar", {"--dvae": "/nonexistent/dvae"}, "not a checkpoint folder"),
        ("uar", {"--tokenizer": "/nonexistent/tok"}, "not a checkpoint folder"),
        ("uar", {"--set": "tokenizer=vqgan"}, "tokenizer must be one of"),
        ("uar", {"--set": "features.block=0"}, "block must be in"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    command: str, change: dict[str, str], message: str, phantoms: Path, tmp_path: Path, capsys
) -> None:
    args = {"--preset": "demo", "--data": str(phantoms), "--out": str(tmp_path / "run"), **change}
    assert main([command, *(x for pair in args.items() for x in pair)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err


def test_data_without_images_exits_2(phantoms: Path, tmp_path: Path, capsys) -> None:
    data = tmp_path / "reports_only"
    data.mkdir()
    shutil.copy(phantoms / "annotation.json", data / "annotation.json")
    assert main(["uar", "--preset", "demo", "--data", str(data), "--out", str(tmp_path / "run")]) == 2
    assert "images" in capsys.readouterr().err


def test_set_may_add_model_fields_the_preset_leaves_out() -> None:
    preset = build_preset(
        "demo", ["model.lambda_global=0", "model.fusion=addition", "stage1.max_iterations=3"]
    )
    config = uar_config(
        preset, vocab_size=100, max_length=60, views=2, tokenizer=tokenizer_config(preset), special=(0, 1, 2)
    )
    assert (config.lambda_global, config.fusion, preset.stage1.max_iterations) == (0, "addition", 3)


def test_triplet_warmup_is_a_stage_share() -> None:
    assert build_preset("demo", ["stage2.triplet_warmup=0.25"]).stage2.triplet_warmup == 0.25
    for bad in ("1.5", "-0.1", "true"):
        with pytest.raises(RRGError, match="triplet_warmup"):
            build_preset("demo", [f"stage1.triplet_warmup={bad}"])
    with pytest.raises(RRGError):
        build_preset("demo", ["dvae.triplet_warmup=0.5"])


def test_probe_epochs_is_a_whole_number() -> None:
    assert build_preset("demo", ["dvae.probe_epochs=0"]).dvae.probe_epochs == 0
    for bad in ("-1", "2.5", "true"):
        with pytest.raises(RRGError, match="probe_epochs"):
            build_preset("demo", [f"dvae.probe_epochs={bad}"])


def test_presets_build_models_and_paper_is_the_papers() -> None:
    for name in ("demo", "cpu", "paper"):
        preset = build_preset(name, [])
        for kind in ("dvae", "features"):
            tokenizer = tokenizer_config(build_preset(name, [f"tokenizer={kind}"]))
            config = uar_config(
                preset, vocab_size=100, max_length=60, views=2, tokenizer=tokenizer, special=(0, 1, 2)
            )
            assert config.grid_size == tokenizer.grid_size and config.first_stage() == 1
    paper = build_preset("paper", [])
    config = uar_config(
        paper, vocab_size=100, max_length=60, views=2, tokenizer=dvae_config(paper), special=(0, 1, 2)
    )
    assert (config.d_model, config.n_heads, config.n_decoder_layers, config.n_encoder_layers) == (
        512,
        8,
        3,
        3,
    )
    assert (config.image_size, config.downsample, config.grid_size, config.n_basis) == (112, 8, 14, 2048)
    assert paper.train_resize == 128 and config.mask_scale == 1000.0
    assert config.lambda_findings == 0.0  # the findings head is ours; the paper trains without labels


def test_evaluate_writes_the_table_and_the_uar_extras(
    micro_run: Path, phantoms: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "eval"
    args = [
        "evaluate", "--checkpoint", str(micro_run), "--data", str(phantoms), "--split", "test", "--out",
        str(out), "--no-baselines", "--metrics", "BLEU_4", "CIDEr", "--workers", "0", "--beam-size", "1",
    ]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| UAR |" in printed and "Alignment" in printed and "R->I P@1" in printed
    result = json.loads((out / "metrics.json").read_text())["UAR"]
    assert set(result["nlg"]) == {"BLEU_4", "CIDEr"}
    assert result["alignment_score"] is None or 0.0 <= result["alignment_score"] <= 1.0
    assert "P@1" in result["retrieval"] and "P@1" in result["retrieval"]["report_to_image"]
    assert "test" in json.loads((micro_run / "metrics.json").read_text())


# -- DDP: two gloo workers train a UAR stage on the same data and end with identical weights ---------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    from rrg_core.data.datasets import IU_XRAY
    from rrg_core.data.vocab import Vocabulary
    from rrg_core.models.uar import UAR
    from rrg_core.models.uar.config import UARConfig
    from train.common.distributed import cleanup_distributed, setup_distributed
    from train.common.runtime import apply_thread_policy
    from train.uar.data import ImageSettings, UARData
    from train.uar.presets import StageSettings
    from train.uar.stages import VisualInput, train_stage

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    info = setup_distributed(torch.device("cpu"))
    try:
        apply_thread_policy(distributed_cpu=True)
        generator = torch.Generator().manual_seed(123)  # the same data on every rank
        vocab = Vocabulary([f"w{i}" for i in range(8)])
        reports = [
            [1, *torch.randint(4, 12, (3 + i % 3,), generator=generator).tolist(), 2] for i in range(8)
        ]
        data = UARData(
            vocab=vocab, spec=IU_XRAY, train_records=[], val_records=[],
            train_images=torch.zeros(8, 2, 32, 32, dtype=torch.uint8),
            val_images=torch.zeros(0, 2, 32, 32, dtype=torch.uint8), report_ids=reports, val_report_ids=[],
            image=ImageSettings(32, 32, 1),
        )  # fmt: skip
        tokens = torch.randint(0, 16, (8, 2, 4, 4), generator=generator)
        torch.manual_seed(rank)  # different initial weights: DDP must broadcast rank 0's
        config = UARConfig(
            vocab_size=12, d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32,
            max_length=8, image_size=32, codebook_size=16, n_basis=32,
        )  # fmt: skip
        model = UAR(config)
        context = _harness(out, info, 0.01)
        settings = StageSettings(epochs=1.0, batch_size=2, lr=1e-3, max_iterations=2)
        for stage in (1, 2):
            context.train(
                f"stage{stage}", train_stage(model, stage, data, VisualInput(tokens, None), settings, context)
            )
        torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
    finally:
        cleanup_distributed()


def test_two_gloo_workers_end_with_identical_weights(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    first = torch.load(tmp_path / "rank0.pt", weights_only=True)
    second = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
    assert float(first["tir_mask"].abs().sum()) > 0  # stage 2 trained the TIR mask


def test_same_seed_same_weights(micro_run: Path, phantoms: Path, tmp_path: Path) -> None:
    run = tmp_path / "again"
    assert main(["uar", "--data", str(phantoms), "--out", str(run), *MICRO]) == 0
    first, second = load_uar(micro_run)[1].state_dict, load_uar(run)[1].state_dict
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_micro_run_writes_training_curves(micro_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(micro_run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"{s}/{kind}" for s in ("dvae", "stage1", "stage2") for kind in ("loss", "lr")} <= tags
    assert {"val/ce", "val/perplexity"} <= tags
    last_dvae = events.Scalars("dvae/loss")[-1].step
    assert events.Scalars("stage1/loss")[0].step > last_dvae  # the curves of the stages follow on


def _harness(out: str, info, weight_decay: float):
    """A harness for one DDP rank, without a command line: what the stage functions read."""
    import argparse

    from train.common.harness import Harness
    from train.common.runtime import Precision

    args = argparse.Namespace(data=Path(out), out=Path(out) / f"run{info.rank}", workers=0, device="cpu",
                              seed=0, preset="test")  # fmt: skip
    harness = Harness(args, "test", weight_decay)
    harness.info, harness.precision = info, Precision(info.device)
    harness.generator = torch.Generator().manual_seed(0)
    return harness


def test_fine_tuned_tokenizer_and_label_context(phantoms: Path, tmp_path: Path) -> None:
    """The demo's recipe in micro: the tokenizer's blocks from 2 on are fine-tuned (the ones before
    keep their ImageNet weights), and the label context's thresholds are chosen after the last stage."""
    from rrg_core.models.uar.feature_tokenizer import FeatureTokenizer
    from rrg_core.models.uar.io import load_lsu_tokenizer

    run = tmp_path / "tuned"
    tuned = [
        "--set", "tokenizer=features", "--set", "features.block=4", "--set", "features.codebook_size=8",
        "--set", "features.iterations=2", "--set", "features.finetune_epochs=1",
        "--set", "features.finetune_from=2", "--set", "features.finetune_batch_size=4",
        "--set", "model.lambda_findings=1", "--set", "model.label_context=true",
        "--set", "thresholds.rule=micro", "--set", "thresholds.studies=train+val",
    ]  # fmt: skip
    assert main(["uar", "--data", str(phantoms), "--out", str(run), *MICRO, *tuned]) == 0
    tokenizer, checkpoint = load_lsu_tokenizer(run / "tokenizer")
    assert checkpoint.metrics["training"]["finetune"]["epochs"] == 1
    imagenet = FeatureTokenizer(tokenizer.config, pretrained=True).features
    for index, (layer, original) in enumerate(zip(tokenizer.features, imagenet, strict=True)):
        pairs = zip(layer.state_dict().values(), original.state_dict().values(), strict=True)
        same = all(torch.equal(a, b) for a, b in pairs)
        assert same == (index < tokenizer.layer_of(2)), index  # stem and blocks 0-1 as ImageNet's
    model, checkpoint = load_uar(run)
    assert not any(p.requires_grad for p in model.tokenizer.parameters())
    chosen = checkpoint.metrics["stage2"]
    assert chosen["threshold_rule"] == "micro F1 on train+val"
    assert torch.allclose(model.thresholds, torch.tensor(list(chosen["thresholds"].values())), atol=1e-4)
    assert "thresholds" not in checkpoint.metrics["stage1"]
