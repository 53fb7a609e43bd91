"""DCRRGGenerator: DCRRG behind the ReportGenerator protocol, and ``python -m train evaluate`` with it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tiny_models import DCRRG_IMAGE_SIZE

from rrg_core.checkpoints import load_checkpoint
from rrg_core.data.datasets import StudyRecord, read_annotation
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import RRGError
from rrg_core.evaluation import GeneratedReport, ReportGenerator
from rrg_core.generators import LOADERS, DCRRGGenerator, load_generator
from rrg_core.models.dcrrg.io import load_dcrrg
from rrg_core.observations import OBSERVATIONS
from rrg_core.table_consistency import description_contradicts
from train import evaluate_cmd
from train.__main__ import main

IMAGE_SIZE = DCRRG_IMAGE_SIZE  # the tiny checkpoint records it, as a small training preset would


@pytest.fixture(scope="module")
def run(tiny_dcrrg_checkpoint):
    """A tiny random DCRRG checkpoint with the phantoms' vocabulary (conftest's)."""
    return tiny_dcrrg_checkpoint


@pytest.fixture(scope="module")
def generator(run):
    return load_generator(run, "cpu", beam_size=2)


def _records(n: int) -> list[StudyRecord]:
    return [StudyRecord(f"s{i}", "the heart is normal .", [f"s{i}/0.png"], "test") for i in range(n)]


def _stacks(views: list[int], size: int = 80) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.rand(v, 1, size, size, generator=generator) for v in views]


def test_one_report_per_record_with_probabilities_and_an_embedding(generator):
    assert isinstance(generator, ReportGenerator) and generator.name == "DCRRG"
    generator.batch_size = 2  # 5 studies: three internal batches
    try:
        reports = generator.generate(_records(5), _stacks([2, 2, 1, 2, 2]))
    finally:
        generator.batch_size = 16
    assert [r.id for r in reports] == [f"s{i}" for i in range(5)]
    for report in reports:
        assert isinstance(report, GeneratedReport) and isinstance(report.text, str)
        assert set(report.probabilities) == set(OBSERVATIONS)
        assert all(0.0 <= p <= 1.0 for p in report.probabilities.values())
        assert len(report.image_embedding) == 16
        assert sum(x * x for x in report.image_embedding) == pytest.approx(1.0, abs=1e-5)
        assert "<" not in report.text  # decoded without special tokens


def test_batching_does_not_change_the_output(generator):
    records, stacks = _records(3), _stacks([2, 2, 2])
    together = generator.generate(records, stacks)
    alone = [generator.generate([r], [s])[0] for r, s in zip(records, stacks, strict=True)]
    for a, b in zip(together, alone, strict=True):
        assert a.text == b.text
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)


def test_views_are_transformed_and_single_views_repeated(generator):
    batch = generator.prepare(_stacks([2, 1]))
    assert batch.shape == (2, 2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert torch.equal(batch[1, 0], batch[1, 1])  # the single view, repeated
    assert torch.equal(batch[0, :, 0], batch[0, :, 2])  # grey repeated to three channels
    # EfficientNet-Lite0 normalises with mean = std = 0.5: [0, 1] -> [-1, 1]
    assert batch.min() >= -1.0 and batch.max() <= 1.0 and batch.min() < -0.9


def test_the_transform_defaults_to_the_backbone_size(generator):
    default = DCRRGGenerator(generator.model, generator.vocab, device="cpu")
    assert default.transform.config.resize == (224, 224)
    assert generator.transform.config.resize == (IMAGE_SIZE, IMAGE_SIZE)
    assert generator.preprocess.image_size == IMAGE_SIZE


def test_a_checkpoint_of_the_previous_layout_still_loads(run, tmp_path):
    # Before the preprocess block, DCRRG checkpoints recorded a top-level image_size (the app's demo cache).
    old = tmp_path / "old"
    shutil.copytree(run, old)
    document = json.loads((old / "config.json").read_text())
    config = document["config"]
    config["image_size"] = config.pop("preprocess")["image_size"]
    (old / "config.json").write_text(json.dumps(document))
    generator = load_generator(old, "cpu", beam_size=1)
    assert generator.preprocess.image_size == IMAGE_SIZE and generator.preprocess.mean == (0.5, 0.5, 0.5)


def test_draft_takes_image_files(generator, tmp_path):
    import numpy as np
    from PIL import Image

    path = tmp_path / "frontal.png"
    Image.fromarray((np.random.default_rng(0).random((90, 90)) * 255).astype("uint8")).save(path)
    draft = generator.draft([path, path])
    assert isinstance(draft.text, str) and set(draft.probabilities) == set(OBSERVATIONS)


def test_embed_reports_gives_unit_rows(generator):
    embeddings = generator.embed_reports(
        ["the heart is normal .", "small left effusion .", "no acute disease ."]
    )
    assert embeddings.shape == (3, 16) and embeddings.device.type == "cpu"
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(3), atol=1e-5)
    assert generator.embed_reports([]).shape == (0, 16)


def test_review_batch_matches_the_draft_and_the_table_computed_apart(generator):
    # review_batch shares one encoder pass between the report and Table 7; the output must not change.
    stacks = _stacks([2, 1])
    drafts, rows = generator.review_batch(stacks)
    with torch.no_grad():
        apart = generator.draft_batch(stacks)
    assert drafts.token_ids == apart.token_ids
    assert torch.allclose(drafts.probabilities, apart.probabilities, atol=1e-6)
    assert torch.allclose(drafts.image_embeddings, apart.image_embeddings, atol=1e-6)
    table = generator.model.describe(generator.prepare(stacks), beam_size=2)
    for b, got in enumerate(rows):
        assert [r.observation for r in got] == list(OBSERVATIONS)
        assert [r.label for r in got] == table.labels[b].tolist()
        decoded = [generator.vocab.decode(ids) for ids in table.description_ids[b]]
        # a description that contradicts its label is withheld (kept aside), never shown
        assert [r.description or r.withheld for r in got] == decoded
        assert all(not (r.description and r.withheld) for r in got)
        assert all(
            bool(r.withheld) == (bool(text) and description_contradicts(r.observation, r.label, text))
            for r, text in zip(got, decoded, strict=True)
        )
        assert [r.probability for r in got] == pytest.approx(table.probabilities[b].tolist(), abs=1e-4)


def test_describe_refuses_text_features(generator):
    features = generator.model.features(["the heart is normal ."])
    with pytest.raises(ValueError, match="image features"):
        generator.model.describe(features)


def test_training_mode_does_not_leak_into_generation(generator):
    generator.model.train()
    generator.generate(_records(1), _stacks([2]))
    assert not generator.model.training


def test_bad_inputs_are_refused(generator, run):
    with pytest.raises(RRGError, match="from images"):
        generator.generate(_records(1), None)
    with pytest.raises(RRGError, match="image stacks"):
        generator.generate(_records(2), _stacks([2]))
    with pytest.raises(RRGError, match=r"\(V, 1, H, W\)"):
        generator.generate(_records(1), [torch.rand(1, 64, 64)])
    model, _ = load_dcrrg(run)
    with pytest.raises(RRGError, match="vocabulary"):
        DCRRGGenerator(model, Vocabulary(["a"]), device="cpu")


def test_one_loader_serves_every_kind(run, tmp_path):
    assert set(LOADERS) == {"dcrrg", "uar"}
    built = load_generator(load_checkpoint(run), torch.device("cpu"), beam_size=1)
    assert isinstance(built, DCRRGGenerator) and built.beam_size == 1
    checkpoint, generator = evaluate_cmd.checkpoint_and_generator(run, "cpu", beam_size=1)
    assert checkpoint.kind == "dcrrg" and isinstance(generator, DCRRGGenerator)


def test_the_top_level_api_drafts_in_three_lines(run, tmp_path):
    import numpy as np
    from PIL import Image

    import rrg_core

    path = tmp_path / "view.png"
    Image.fromarray((np.random.default_rng(1).random((70, 70)) * 255).astype("uint8")).save(path)
    assert isinstance(rrg_core.load_generator(run, "cpu").draft([path]).text, str)


def test_a_kind_without_reports_is_refused_by_the_loader(tmp_path):
    from rrg_core.checkpoints import CheckpointError
    from rrg_core.models.preprocess import Preprocess
    from rrg_core.models.uar import DVAE, DVAEConfig, save_tokenizer

    folder = save_tokenizer(
        DVAE(DVAEConfig(in_channels=1, image_size=32, downsample=8, codebook_size=16, embed_dim=4, hidden=4)),
        tmp_path / "dvae", preprocess=Preprocess(image_size=32, channels=1),
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="writes no reports"):
        load_generator(folder, "cpu")


def test_cli_evaluates_a_dcrrg_checkpoint_end_to_end(phantoms, run, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(run), "--data", str(phantoms), "--split", "test",
            "--no-baselines", "--out", str(out), "--metrics", "BLEU_4", "ROUGE_L",
            "--workers", "0", "--device", "cpu", "--beam-size", "2"]  # fmt: skip
    assert main(argv) == 0
    assert "| DCRRG |" in capsys.readouterr().out
    result = json.loads((out / "metrics.json").read_text())["DCRRG"]
    assert result["num_studies"] == len(read_annotation(phantoms)["test"])
    assert set(result["nlg"]) == {"BLEU_4", "ROUGE_L"}
    assert result["auroc"] is not None and "num_defined" in result["auroc"]
    assert result["retrieval"] is not None and "P@1" in result["retrieval"]
    assert 0.0 <= result["retrieval"]["P@1"] <= 1.0
    assert json.loads((run / "metrics.json").read_text())["test"]["model"] == "DCRRG"
