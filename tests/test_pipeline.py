"""ReviewPipeline: both drafts, Table 7, attention, flags and warnings for a study; JSON; bad input."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import phantom_vocabulary, save_tiny_dcrrg, save_tiny_uar

from rrg_core.checkpoints import CheckpointError
from rrg_core.data.datasets import read_annotation
from rrg_core.data.images import ImageLoadError
from rrg_core.data.vocab import Vocabulary
from rrg_core.disagreements import find_disagreements
from rrg_core.observations import OBSERVATIONS
from rrg_core.pipeline import ReviewPipeline
from rrg_core.review_result import SCHEMA_VERSION, ObservationRow, ReviewResult
from rrg_core.study_input import load_study
from train.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vocab(phantoms) -> Vocabulary:
    return phantom_vocabulary(phantoms)


@pytest.fixture(scope="module")
def checkpoints(vocab, phantoms, tmp_path_factory):
    """A folder with a tiny random DCRRG and UAR checkpoint trained (nominally) on the same data, each
    with the image index of the phantoms' training split beside it."""
    root = tmp_path_factory.mktemp("checkpoints")
    save_tiny_dcrrg(phantoms, root / "dcrrg", data_fingerprint="same")
    save_tiny_uar(phantoms, root / "uar", data_fingerprint="same")
    for kind in ("dcrrg", "uar"):
        command = ["index", "--checkpoint", str(root / kind), "--data", str(phantoms), "--workers", "0"]
        assert main(command) == 0
    return root


@pytest.fixture(scope="module")
def pipeline(checkpoints):
    return ReviewPipeline.from_checkpoints(checkpoints, device="cpu", beam_size=2)


@pytest.fixture(scope="module")
def study(phantoms) -> list[str]:
    record = read_annotation(phantoms)["test"][0]
    return [str(phantoms / "images" / path) for path in record.image_paths]


def test_one_study_gets_both_drafts_table_attention_and_neighbours(pipeline, study, phantoms):
    result = pipeline.review(study, study_id="s1")
    assert result.study_id == "s1" and result.missing == {} and result.schema_version == SCHEMA_VERSION
    assert set(result.drafts) == {"dcrrg", "uar"}
    assert len(result.views) == 2 and result.views[0]["format"] == "png"
    for draft in result.drafts.values():
        assert draft.text == " ".join(draft.tokens)
        assert set(draft.labels) == set(OBSERVATIONS)
        assert len(draft.checkpoint_hash) == 16
    assert [row.observation for row in result.observations] == list(OBSERVATIONS)
    for row in result.observations:
        assert 0 <= row.probability <= 1 and 0 <= row.threshold <= 1
        assert row.label == int(row.probability >= row.threshold)
    maps = result.attention.maps
    assert maps.shape[:2] == (len(result.drafts["uar"].tokens), 2)  # a map per token and per view
    assert np.allclose(maps.reshape(len(maps), -1).sum(axis=1), 1.0, atol=1e-4) if len(maps) else True
    assert {"load", "dcrrg", "uar", "retrieval", "total"} <= set(result.timings)
    train_ids = {r.id for r in read_annotation(phantoms)["train"]}
    for key in ("dcrrg", "uar"):
        neighbours = result.neighbours[key]
        assert len(neighbours) == 5 and {n.study_id for n in neighbours} <= train_ids
        assert [n.score for n in neighbours] == sorted((n.score for n in neighbours), reverse=True)
        assert all(n.image_path.startswith("images/") and n.report for n in neighbours)
    assert result.warnings == []  # same data and vocabulary, plausible images


def test_the_result_is_json_and_reads_back(pipeline, study):
    result = pipeline.review(study)
    text = result.to_json()
    back = ReviewResult.from_json(text)
    assert back.to_dict() == json.loads(text)
    data = json.loads(text)
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(Exception, match="schema version"):
        ReviewResult.from_dict(data)


def test_a_batch_gives_what_single_reviews_give(pipeline, study, phantoms):
    other = [str(phantoms / "images" / p) for p in read_annotation(phantoms)["test"][1].image_paths]
    batch = pipeline.review_batch([study, other, study[:1]], study_ids=["a", "b", "c"])
    assert [r.study_id for r in batch] == ["a", "b", "c"]
    for result, views in zip(batch[:2], [study, other], strict=True):
        single = pipeline.review(views)
        assert {k: d.text for k, d in result.drafts.items()} == {k: d.text for k, d in single.drafts.items()}
    # In a batch, a one-view study's view is repeated to the batch's two: the same attention average and
    # pooled mean, summed in another order. The untrained models' next-word scores are near ties, which
    # such rounding may flip, so the texts are not compared here; the classifier's figures are.
    alone, batched = pipeline.review(study[:1]), batch[2]
    expected = [row.probability for row in alone.observations]
    assert [row.probability for row in batched.observations] == pytest.approx(expected, abs=1e-4)


def test_paths_bytes_and_arrays_are_the_same_image(pipeline, study):
    data = Path(study[0]).read_bytes()
    array = np.asarray(Image.open(io.BytesIO(data)))
    texts = {
        kind: pipeline.review([source]).drafts["dcrrg"].text
        for kind, source in {"path": study[0], "bytes": data, "array": array}.items()
    }
    assert len(set(texts.values())) == 1, texts


def test_concurrent_calls_are_safe(pipeline, study):
    expected = pipeline.review(study).drafts["uar"].text
    results, errors = [], []

    def call():
        try:
            results.append(pipeline.review(study).drafts["uar"].text)
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and results == [expected] * 4


def test_an_unreadable_file_names_its_study_and_the_pipeline_goes_on(pipeline, study, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(ImageLoadError, match=r"study b: .*not an image this app can read"):
        pipeline.review_batch([study, [str(bad)]], study_ids=["a", "b"])
    with pytest.raises(ImageLoadError, match="too small"):
        pipeline.review([np.zeros((8, 8), dtype=np.uint8)])
    with pytest.raises(ImageLoadError, match="no image given"):
        pipeline.review([])
    assert pipeline.review(study).drafts["dcrrg"].text is not None


def test_odd_images_are_reviewed_with_a_warning(pipeline):
    flat = np.full((256, 256), 120, dtype=np.uint8)
    strip = (np.random.default_rng(0).random((64, 400)) * 255).astype(np.uint8)
    result = pipeline.review([flat, strip])
    assert any("uniformly grey" in w for w in result.warnings)
    assert any("far from a chest film's shape" in w for w in result.warnings)
    assert set(result.drafts) == {"dcrrg", "uar"}


def test_a_missing_model_is_named_and_the_other_still_works(phantoms, study, tmp_path):
    save_tiny_dcrrg(phantoms, tmp_path / "dcrrg")
    alone = ReviewPipeline.from_checkpoints(tmp_path, device="cpu", beam_size=1)
    result = alone.review(study)
    assert set(result.drafts) == {"dcrrg"} and "UAR" in result.missing["uar"]
    assert result.attention is None and len(result.observations) == 14
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no model could be loaded: no DCRRG checkpoint"):
        ReviewPipeline.from_checkpoints(empty, device="cpu")


def test_checkpoints_from_different_data_or_vocabularies_warn(phantoms, vocab, study, tmp_path):
    save_tiny_dcrrg(phantoms, tmp_path / "dcrrg", data_fingerprint="one")
    other = Vocabulary([*vocab.tokens[4:], "extra"])
    save_tiny_uar(phantoms, tmp_path / "uar", vocab=other, data_fingerprint="two")
    warnings = ReviewPipeline.from_checkpoints(tmp_path, device="cpu", beam_size=1).review(study).warnings
    assert any("different data" in w for w in warnings)
    assert any("different vocabularies" in w for w in warnings)


def test_disagreements_between_drafts_and_with_the_classifier():
    labels = {
        "dcrrg": {"Pleural Effusion": 1, "Cardiomegaly": 0, "Edema": -1},
        "uar": {"Pleural Effusion": 0, "Cardiomegaly": 0, "Edema": 1},
    }
    rows = [
        ObservationRow(name, 0.9 if name == "Cardiomegaly" else 0.1, threshold=0.5, label=0, description="")
        for name in OBSERVATIONS
    ]
    flags = {f.observation: f for f in find_disagreements(labels, {"dcrrg": "DCRRG", "uar": "UAR"}, rows)}
    effusion = flags["Pleural Effusion"].reasons
    assert "the drafts differ: DCRRG says positive, UAR says negative" in effusion
    assert any("DCRRG says positive but the classifier says no" in r for r in effusion)
    assert any("says negative but the classifier says yes" in r for r in flags["Cardiomegaly"].reasons)
    # Uncertain and positive both assert: the drafts agree on edema, the classifier does not.
    assert not any("drafts differ" in r for r in flags["Edema"].reasons)
    assert "Atelectasis" not in flags  # unmentioned by both, classifier says no: nothing to look at
    no_classifier = find_disagreements(labels, {"dcrrg": "DCRRG", "uar": "UAR"})
    assert [f.observation for f in no_classifier] == ["Pleural Effusion"]


def test_load_study_refuses_too_many_views():
    with pytest.raises(ImageLoadError, match="at most"):
        load_study([np.zeros((64, 64), dtype=np.uint8)] * 9)


def test_cli_prints_one_result_per_study(checkpoints, study, capsys):
    assert main(["review", "--checkpoints", str(checkpoints), "--beam-size", "1", "--no-attention",
                 ",".join(study), study[0]]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert [len(r["views"]) for r in out] == [2, 1]
    assert all(r["attention"] is None and set(r["drafts"]) == {"dcrrg", "uar"} for r in out)
    assert main(["review", "--checkpoints", str(checkpoints), "/nonexistent.png"]) == 2


def test_attributions_are_computed_on_demand(pipeline, study):
    attribution = pipeline.attribute(study[0], "pleural effusion", "gradcam")
    assert attribution.observation == "Pleural Effusion" and attribution.method == "gradcam"
    assert attribution.heatmap.shape == (64, 64) and 0 <= attribution.probability <= 1
    with pytest.raises(Exception, match="unknown observation"):
        pipeline.attribute(study[0], "broken heart")
