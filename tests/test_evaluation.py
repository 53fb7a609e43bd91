"""rrg_core.evaluation (scores of generated reports) and ``python -m train evaluate``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rrg_core.checkpoints import save_checkpoint
from rrg_core.data.datasets import StudyRecord
from rrg_core.errors import RRGError
from rrg_core.evaluation import (
    RETRIEVAL_RELEVANCE,
    GeneratedReport,
    evaluate_model,
    evaluate_reports,
)
from rrg_core.evaluation_tables import format_table
from rrg_core.metrics import java_available
from rrg_core.phantoms import write_phantoms
from train.__main__ import main

FAST = ("BLEU_1", "BLEU_4", "ROUGE_L", "CIDEr")  # no METEOR: its JVM start costs seconds

REPORTS = [
    "The heart is enlarged. There is a small right pleural effusion.",
    "Heart size is normal. The lungs are clear. No pneumothorax.",
    "There is a right pneumothorax. No pleural effusion.",
    "Mild cardiomegaly. Left lower lobe atelectasis.",
    "Heart size is normal. The lungs are clear. No pneumothorax.",
    "Right upper lobe consolidation, consistent with pneumonia.",
]


def _records(reports=REPORTS) -> list[StudyRecord]:
    return [StudyRecord(f"s{i}", text, (f"s{i}/0.png",), "test") for i, text in enumerate(reports)]


def _same(records, **extra) -> list[GeneratedReport]:
    return [GeneratedReport(r.id, r.report, **extra) for r in records]


def test_perfect_reports_score_full_marks():
    records = _records()
    result = evaluate_reports(records, _same(records), metrics=FAST)
    assert result.nlg["BLEU_1"] == pytest.approx(1.0, abs=1e-6)
    assert result.nlg["BLEU_4"] == pytest.approx(1.0, abs=1e-6)
    assert result.nlg["ROUGE_L"] == pytest.approx(1.0)
    assert result.clinical.micro.f1 == 1.0
    # Macro averages over all 14 observations; those no report mentions score 0 (zero_division=0).
    present = [prf for prf in result.clinical.per_observation.values() if prf.support]
    assert present and all(prf.f1 == 1.0 for prf in present)
    assert result.num_studies == len(records)
    assert result.auroc is None and result.precision_at_k is None and result.studies_per_second is None


def test_ce_three_ways_over_14_and_the_chexbert_five_in_the_json():
    records = _records()
    # Report 0 hedged: "possible" effusion (uncertain) instead of a definite one.
    generated = [GeneratedReport(r.id, r.report.replace("There is a small", "Possible")) for r in records]
    default = evaluate_reports(records, generated, metrics=("BLEU_1",)).to_dict()
    assert default["uncertain_as"] == "negative"
    for block, count in (("clinical_efficacy", 14), ("clinical_efficacy_5", 5)):
        assert set(default[block]) >= {"micro", "macro", "example_based", "per_observation", "uncertain_as"}
        assert len(default[block]["per_observation"]) == count
    assert default["clinical_efficacy_5"]["per_observation"]["Pleural Effusion"]["recall"] == 0.0
    positive = evaluate_reports(records, generated, metrics=("BLEU_1",), uncertain_as="positive").to_dict()
    assert positive["clinical_efficacy_5"]["per_observation"]["Pleural Effusion"]["recall"] == 1.0
    assert positive["clinical_efficacy"]["uncertain_as"] == "positive"


def test_near_empty_reports_score_low_and_order_does_not_matter():
    records = _records()
    empty = [GeneratedReport(r.id, "the.") for r in reversed(records)]  # any order: matched by id
    result = evaluate_reports(records, empty, metrics=FAST)
    assert result.nlg["BLEU_4"] < 0.01 and result.nlg["CIDEr"] < 0.1
    # A report that states nothing is "No Finding" (CheXpert's rule), so only that one can score.
    assert result.clinical.macro.f1 < 0.1
    assert [name for name, prf in result.clinical.per_observation.items() if prf.f1] == ["No Finding"]
    # Texts are scored in the cleaned R2Gen form, and the per-study details say so.
    assert result.studies[0].reference == "the heart is enlarged . there is a small right pleural effusion ."
    assert result.studies[0].generated == "the ."
    assert result.studies[0].reference_labels["Cardiomegaly"] == 1


def test_missing_duplicate_or_foreign_ids_are_refused():
    records = _records()
    with pytest.raises(RRGError, match="no generated report"):
        evaluate_reports(records, _same(records)[1:], metrics=FAST)
    with pytest.raises(RRGError, match="two generated reports"):
        evaluate_reports(records, [*_same(records), _same(records)[0]], metrics=FAST)
    with pytest.raises(RRGError, match="not evaluated"):
        evaluate_reports(records, [*_same(records), GeneratedReport("other", "x")], metrics=FAST)


def test_auroc_present_with_probabilities_and_skips_one_class_observations():
    records = _records()
    # Cardiomegaly is positive in s0 and s3: a perfect ranking; Pneumothorax (s2 only) ranked worst.
    probabilities = [
        {"Cardiomegaly": p_cm, "Pneumothorax": p_ptx, "Fracture": 0.5}
        for p_cm, p_ptx in ((0.9, 0.5), (0.1, 0.6), (0.2, 0.1), (0.8, 0.7), (0.3, 0.8), (0.4, 0.9))
    ]
    generated = [GeneratedReport(r.id, r.report, p) for r, p in zip(records, probabilities, strict=True)]
    result = evaluate_reports(records, generated, metrics=FAST)
    assert result.auroc is not None
    assert result.auroc.per_observation["Cardiomegaly"] == 1.0
    assert result.auroc.per_observation["Pneumothorax"] == 0.0
    # No reference is positive for Fracture: undefined, left out of the mean and of the JSON.
    assert math.isnan(result.auroc.per_observation["Fracture"])
    assert result.auroc.mean == 0.5 and result.auroc.num_defined == 2
    data = result.to_dict()
    assert data["auroc"]["per_observation"] == {"Cardiomegaly": 1.0, "Pneumothorax": 0.0}
    json.dumps(data, allow_nan=False)


def test_probabilities_for_some_reports_only_are_refused():
    records = _records()
    generated = _same(records)
    generated[0] = GeneratedReport(records[0].id, records[0].report, {"Cardiomegaly": 0.5})
    with pytest.raises(RRGError, match="probabilities given for 1 of 6"):
        evaluate_reports(records, generated, metrics=FAST)


class _Retriever:
    """A fake model with a joint space: study i's image embedding is the one-hot vector of its group."""

    name = "Retriever"

    def __init__(self, groups: list[int], dims: int = 4) -> None:
        self.groups, self.dims, self.calls = groups, dims, []

    def _vector(self, group: int) -> list[float]:
        return [1.0 if d == group else 0.0 for d in range(self.dims)]

    def generate(self, records, images):
        self.calls.append(None if images is None else len(images))
        index = {f"s{i}": g for i, g in enumerate(self.groups)}
        return [GeneratedReport(r.id, r.report, image_embedding=self._vector(index[r.id])) for r in records]

    def embed_reports(self, texts):
        return torch.tensor([self._vector(self.groups[i]) for i in range(len(texts))])


def test_precision_at_k_from_image_and_report_embeddings():
    records = _records()
    # s1 and s4 have the same report (the same positive-label set); the others' label sets are unique.
    perfect = _Retriever([0, 1, 2, 3, 1, 2])
    result = evaluate_model(perfect, records, batch_size=4, metrics=FAST, progress=False)
    assert perfect.calls == [None, None]  # two batches; no images given
    # Ties in similarity go to the lower index: s4's top-1 is s1 (same labels: relevant), s5's is s2
    # (same group, other labels: not relevant); every other query finds itself first.
    assert result.precision_at_k[1] == pytest.approx(5 / 6)
    assert result.precision_at_k[2] == pytest.approx((0.5 + 1 + 0.5 + 0.5 + 1 + 0.5) / 6)
    assert 10 not in result.precision_at_k  # more than the 6 candidates
    assert result.to_dict()["retrieval"]["relevance"] == RETRIEVAL_RELEVANCE
    # A random ranking: s1 and s4 find 2 relevant reports among 6, the others 1.
    assert result.chance_precision == pytest.approx((2 + 2 + 4 * 1) / 6 / 6)
    assert result.to_dict()["retrieval"]["chance"] == result.chance_precision
    assert result.studies_per_second is not None and result.studies_per_second > 0
    assert "| Retriever |" in format_table({"Retriever": result})


def test_evaluate_model_passes_images_in_batches_and_skips_them_when_not_needed():
    records = _records()
    stacks = [torch.zeros(2, 1, 8, 8) for _ in records]
    model = _Retriever([0] * 6)
    evaluate_model(model, records, iter(stacks), batch_size=4, metrics=FAST, progress=False)
    assert model.calls == [4, 2]
    model.needs_images = False
    model.calls.clear()
    evaluate_model(model, records, stacks, batch_size=4, metrics=FAST, progress=False)
    assert model.calls == [None, None]
    with pytest.raises(RRGError, match="fewer image stacks"):
        evaluate_model(_Retriever([0] * 6), records, stacks[:3], metrics=FAST, progress=False)


def test_format_table_marks_missing_values():
    records = _records()
    table = format_table({"Copy": evaluate_reports(records, _same(records), metrics=("BLEU_1",))})
    header, _, row = table.splitlines()[:3]
    columns = "B1 | B2 | B3 | B4 | MTR | RL | CIDEr | P | R | F1 | AUROC | P@1 | P@5 | studies/s"
    assert header == f"| Model | {columns} |"
    assert row.startswith("| Copy | 1.000 | - | - |") and row.endswith("| - | - | - | - |")
    assert "macro" in table


@pytest.mark.skipif(not java_available(), reason="METEOR needs Java")
def test_all_metrics_in_one_call_including_meteor():
    records = _records()
    result = evaluate_reports(records, _same(records))
    assert list(result.nlg) == ["BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr"]
    assert result.nlg["METEOR"] > 0.9


# --- python -m train evaluate -------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantoms")
    write_phantoms(folder, 40, seed=0, size=64)
    return folder


def _cli(data, out, *extra):
    return main(
        ["evaluate", "--data", str(data), "--out", str(out), "--workers", "0", "--metrics", *FAST, *extra]
    )


def test_cli_scores_the_baselines(phantoms, tmp_path, capsys):
    out = tmp_path / "eval"
    assert _cli(phantoms, out, "--baselines") == 0
    printed = capsys.readouterr().out
    assert "| MostFrequentReport |" in printed and "| NearestNeighbourReport |" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"MostFrequentReport", "NearestNeighbourReport"}
    n_test = len(json.loads((phantoms / "annotation.json").read_text())["test"])
    assert metrics["MostFrequentReport"]["num_studies"] == n_test > 0
    lines = (out / "generated.jsonl").read_text().splitlines()
    assert len(lines) == 2 * n_test
    line = json.loads((out / "generated.jsonl").read_text().splitlines()[0])
    assert set(line) == {"id", "model", "reference", "generated", "reference_labels", "generated_labels"}


def test_cli_limit_and_image_loading_workers(phantoms, tmp_path, capsys):
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--data",
                str(phantoms),
                "--out",
                str(out),
                "--limit",
                "3",
                "--metrics",
                "BLEU_1",
                "--uncertain-as",
                "positive",
            ]
        )
        == 0
    )
    result = json.loads((out / "metrics.json").read_text())["NearestNeighbourReport"]
    assert result["num_studies"] == 3
    assert result["uncertain_as"] == result["clinical_efficacy_5"]["uncertain_as"] == "positive"


def test_cli_refuses_an_unregistered_checkpoint_kind(phantoms, tmp_path, capsys):
    run = save_checkpoint(tmp_path / "run", kind="dvae", config={}, state_dict={"w": torch.zeros(1)})
    assert _cli(phantoms, tmp_path / "eval", "--checkpoint", str(run)) == 2
    assert "'dvae' checkpoint, which writes no reports" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


def test_cli_scores_a_registered_model_and_merges_into_its_metrics(phantoms, tmp_path, monkeypatch, capsys):
    seen = {}

    def factory(checkpoint, device, *, beam_size):
        seen.update(kind=checkpoint.kind, device=device.type, beam_size=beam_size)
        model = _Retriever([0] * 1000)
        model.name = "Fake"
        model.generate = lambda records, images: [GeneratedReport(r.id, r.report) for r in records]
        return model

    from rrg_core.generators import LOADERS

    monkeypatch.setitem(LOADERS, "dcrrg", factory)
    run = save_checkpoint(tmp_path / "run", kind="dcrrg", config={}, state_dict={"w": torch.zeros(1)})
    assert (
        _cli(
            phantoms,
            tmp_path / "eval",
            "--checkpoint",
            str(run),
            "--no-baselines",
            "--beam-size",
            "2",
            "--device",
            "cpu",
        )
        == 0
    )
    assert seen == {"kind": "dcrrg", "device": "cpu", "beam_size": 2}
    assert "| Fake | 1.000 |" in capsys.readouterr().out
    merged = json.loads((run / "metrics.json").read_text())
    assert merged["test"]["model"] == "Fake" and merged["test"]["clinical_efficacy"]["micro"]["f1"] == 1.0


def test_cli_user_errors_are_one_line(phantoms, tmp_path, capsys):
    assert _cli(phantoms, tmp_path / "a", "--no-baselines") == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    assert _cli(tmp_path / "nowhere", tmp_path / "b") == 2
    assert "no annotation file" in capsys.readouterr().err
    assert _cli(phantoms, tmp_path / "c", "--split", "dev") == 2
    assert "no split 'dev'" in capsys.readouterr().err
    text_only = tmp_path / "text_only"
    text_only.mkdir()
    (text_only / "annotation.json").write_text((phantoms / "annotation.json").read_text())
    assert _cli(text_only, tmp_path / "d") == 2
    assert "no images/ directory" in capsys.readouterr().err
