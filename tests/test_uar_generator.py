"""UARGenerator: the ReportGenerator protocol, CRA embeddings for retrieval, heatmaps, checkpoints,
and the alignment / report-to-image figures evaluation adds for joint-space models."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from tiny_models import UAR_PREPROCESS, tiny_uar

from rrg_core.checkpoints import load_checkpoint
from rrg_core.data.datasets import StudyRecord
from rrg_core.data.vocab import Vocabulary
from rrg_core.errors import RRGError
from rrg_core.evaluation import ReportGenerator, evaluate_model
from rrg_core.evaluation_tables import format_alignment_table
from rrg_core.generators import load_generator
from rrg_core.generators.uar import UARGenerator, model_name
from rrg_core.models.uar import UAR
from rrg_core.models.uar.config import ablation_config
from rrg_core.models.uar.io import save_uar
from rrg_core.observations import OBSERVATIONS

WORDS = ["heart", "normal", "lungs", "clear", "effusion", "small", "no", "."]
PREPROCESS = UAR_PREPROCESS


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(stage: int = 2) -> UAR:
    return tiny_uar(len(WORDS) + 4, stage)


def generator(**kwargs) -> UARGenerator:
    return UARGenerator(
        tiny_model(), Vocabulary(WORDS), device="cpu", preprocess=PREPROCESS, max_length=6, **kwargs
    )


def studies(n: int, views: int = 2, size: int = 48) -> tuple[list[StudyRecord], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(n)
    records = [
        StudyRecord(f"s{i}", "heart normal . lungs clear .", ("a.png", "b.png"), "test") for i in range(n)
    ]
    return records, [torch.rand(views, 1, size, size, generator=g) for _ in range(n)]


def test_generate_follows_the_protocol() -> None:
    gen = generator(batch_size=2)
    assert isinstance(gen, ReportGenerator) and gen.needs_images
    records, images = studies(3)
    reports = gen.generate(records, images)
    assert [r.id for r in reports] == ["s0", "s1", "s2"]
    for report in reports:
        assert isinstance(report.text, str) and len(report.image_embedding) == 16
        assert report.probabilities is None
    # One frontal view is given to both view slots; extra views are dropped.
    single = gen.generate(records[:1], [images[0][:1]])
    repeated = gen.generate(records[:1], [images[0][:1].repeat(2, 1, 1, 1)])
    assert single[0].text == repeated[0].text
    assert gen.generate(records[:1], [torch.cat([images[0], images[1]])])[0].text == reports[0].text


def test_embeddings_are_the_cra_global_features() -> None:
    gen = generator()
    records, images = studies(2)
    reports = gen.generate(records, images)
    visual = gen.visual_input(images)
    assert torch.allclose(
        torch.tensor(reports[0].image_embedding), gen.model.image_global(visual)[0], atol=1e-5
    )
    texts = ["heart normal .", "small effusion . lungs clear ."]
    embedded = gen.embed_reports(texts)
    assert embedded.shape == (2, 16)
    assert torch.allclose(embedded[1], gen.model.report_global(gen.encode_reports(texts[1:]))[0], atol=1e-5)
    assert gen.embed_reports([]).shape == (0, 16)


def test_explain_gives_a_heatmap_per_word() -> None:
    gen = generator()
    _, images = studies(2)
    explanations = gen.explain(images)
    assert len(explanations) == 2
    for explanation in explanations:
        assert explanation.text == " ".join(explanation.words)
        assert explanation.attention.shape == (len(explanation.words), 2, 4, 4)
        if explanation.words:
            sums = explanation.attention.sum(dim=(1, 2, 3))
            assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
        assert explanation.upsampled(32).shape == (len(explanation.words), 2, 32, 32)
    forced = gen.attention_for_report(images[:1], "small effusion .")
    assert forced.words == ["small", "effusion", "."] and forced.attention.shape == (3, 2, 4, 4)


def test_bad_input_is_refused() -> None:
    gen = generator()
    records, images = studies(2)
    with pytest.raises(RRGError, match="none were given"):
        gen.generate(records, None)
    with pytest.raises(RRGError, match="2 studies but 1"):
        gen.generate(records, images[:1])
    with pytest.raises(RRGError, match="grey views"):
        gen.generate(records[:1], [torch.rand(2, 3, 32, 32)])
    with pytest.raises(RRGError, match="vocabulary of 5"):
        UARGenerator(tiny_model(), Vocabulary(["a"]), device="cpu")
    untokenized = UAR(tiny_model().config)
    with pytest.raises(RRGError, match="no dVAE tokenizer"):
        UARGenerator(untokenized, Vocabulary(WORDS), device="cpu")


def test_checkpoint_factory_is_registered(tmp_path) -> None:
    model = tiny_model()
    folder = save_uar(model, tmp_path / "uar", vocab=Vocabulary(WORDS), preprocess=PREPROCESS)
    checkpoint = load_checkpoint(folder)
    gen = load_generator(checkpoint, torch.device("cpu"), beam_size=2)
    gen.max_length = 6
    records, images = studies(2)
    expected = generator(beam_size=2).generate(records, images)[0].text
    assert gen.generate(records, images)[0].text == expected
    odd = save_uar(
        model,
        tmp_path / "odd",
        vocab=Vocabulary(WORDS),
        preprocess=dataclasses.replace(PREPROCESS, image_size=64),
    )
    with pytest.raises(RRGError, match="image_size 64"):
        load_generator(odd, "cpu")
    # Checkpoints of the previous layout recorded an ``image`` entry instead of ``preprocess``.
    document = json.loads((folder / "config.json").read_text())
    document["config"]["image"] = {"size": 32, "train_resize": 32, "channels": 1, "mean": [0.5], "std": [0.5]}
    del document["config"]["preprocess"]
    (folder / "config.json").write_text(json.dumps(document))
    assert load_generator(folder, "cpu").preprocess == PREPROCESS


def test_evaluation_adds_alignment_and_report_to_image_precision() -> None:
    gen = generator()
    reports = [
        "heart normal . lungs clear .",
        "small effusion .",
        "no effusion . heart normal .",
        "lungs clear .",
    ]
    records = [StudyRecord(f"s{i}", text, ("a.png", "b.png"), "test") for i, text in enumerate(reports)]
    _, images = studies(4)
    result = evaluate_model(gen, records, images, metrics=["BLEU_1"], progress=False)
    assert result.alignment is not None and 0.0 <= result.alignment <= 1.0
    assert set(result.precision_at_k) == set(result.report_to_image_precision_at_k) == {1, 2}
    data = result.to_dict()
    assert data["alignment_score"] == result.alignment
    assert set(data["retrieval"]["report_to_image"]) == {"P@1", "P@2"}
    table = format_alignment_table({"UAR": result})
    assert table.splitlines()[0].startswith("| Model | Alignment | I->R P@1")
    assert table.splitlines()[0].endswith("| chance P@K |") and 0 < result.chance_precision <= 1
    assert "| UAR |" in table
    assert not math.isnan(result.alignment)


def test_ablation_rows_are_named_apart() -> None:
    assert model_name(tiny_model().config) == "UAR"
    assert model_name(ablation_config("lsu_cra", 12)) == "UAR[lsu_cra]"
    assert model_name(ablation_config("base", 12)) == "UAR[base]"


def test_consistent_beams_draft_the_beam_that_agrees_with_the_labels() -> None:
    gen = generator()
    labels = torch.zeros(14, dtype=torch.long)
    labels[OBSERVATIONS.index("Pleural Effusion")] = 1
    denies, states = (gen.vocab.encode(t, 10)[1:-1] for t in ("no effusion .", "small effusion ."))
    assert gen.agreeing_beam(labels, [denies, states, states]) == 1  # the first that agrees
    assert gen.agreeing_beam(labels, [states, denies]) == 0
    assert gen.agreeing_beam(None, [denies, states]) == 0
