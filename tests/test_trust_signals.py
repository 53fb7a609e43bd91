"""Trust signals: the out-of-domain check and sentence support, unit by unit and through the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import save_tiny_dcrrg, save_tiny_uar

from rrg_core.data.datasets import read_annotation
from rrg_core.models.sampling import sample_sequences
from rrg_core.pipeline import ReviewPipeline
from rrg_core.retrieval import (
    DomainCalibration,
    DomainModel,
    RetrievalError,
    calibrate,
    load_calibration,
    save_calibration,
)
from rrg_core.retrieval.domain import calibration_path, domain_check
from rrg_core.retrieval.index import IndexMismatchError
from rrg_core.review_result import ReviewResult
from rrg_core.support import SupportSettings, agrees, sentence_claims, support_values
from train.__main__ import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _calibration(threshold: float, **changes) -> DomainCalibration:
    values = dict(
        method="test", shrinkage=0.01, percentile=99.0, threshold=threshold, train_studies=10, val_studies=5,
        split="val", checkpoint_sha256="abc", val_median=threshold / 2, val_max=threshold,
        data_description="synthetic phantoms",
    )  # fmt: skip
    return DomainCalibration(**{**values, **changes})


# -- out of domain ----------------------------------------------------------------------------------


def test_the_score_is_the_mahalanobis_distance_to_the_training_embeddings():
    rng = np.random.default_rng(0)
    train = torch.tensor(rng.normal(size=(400, 3)) * [1.0, 1.0, 0.01])  # hardly varies along the third axis
    val = torch.tensor(rng.normal(size=(100, 3)) * [1.0, 1.0, 0.01])
    model = calibrate(train, val, checkpoint_sha256="h", shrinkage=0.0, percentile=99.0)
    assert model.calibration.val_studies == 100 and model.calibration.train_studies == 400
    assert 2.0 < model.threshold < 5.0  # chi with 3 degrees of freedom
    along_wide, along_narrow = model.scores(torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.2]]))
    assert along_wide < model.threshold < along_narrow  # the same Euclidean size, very different distances
    with pytest.raises(RetrievalError, match="values"):
        model.scores(torch.zeros(1, 4))


def test_calibration_is_saved_beside_the_index_and_tied_to_the_weights(tmp_path):
    rng = np.random.default_rng(1)
    model = calibrate(torch.tensor(rng.normal(size=(50, 4))), torch.tensor(rng.normal(size=(9, 4))),
                      checkpoint_sha256="abc")  # fmt: skip
    path = save_calibration(model, tmp_path)
    assert path == calibration_path(tmp_path) and path.parent.name == "index"
    loaded = load_calibration(tmp_path, "abc")
    assert loaded.calibration == model.calibration and torch.equal(loaded.precision, model.precision)
    with pytest.raises(IndexMismatchError, match="rebuild"):
        load_calibration(tmp_path, "other")
    assert load_calibration(tmp_path / "none", "abc") is None
    (path.parent / "domain.safetensors").write_bytes(b"broken")
    with pytest.raises(RetrievalError, match="corrupt"):
        load_calibration(tmp_path, "abc")


def test_either_models_flag_counts():
    names = {"dcrrg": "DCRRG", "uar": "UAR"}
    inside = domain_check({"dcrrg": (0.1, _calibration(0.2)), "uar": (0.05, _calibration(0.3))}, names)
    assert inside.in_domain and inside.message == ""
    one = domain_check({"dcrrg": (0.1, _calibration(0.2)), "uar": (0.9, _calibration(0.3))}, names)
    assert not one.in_domain and one.score == 0.9 and one.threshold == 0.3
    assert one.models["dcrrg"]["in_domain"] and not one.models["uar"]["in_domain"]
    assert "unlike the 10 studies" in one.message and "synthetic phantoms" in one.message
    assert "meaningless" in one.message and "UAR flagged it" in one.message
    assert domain_check({}, names) is None


# -- sentence support -------------------------------------------------------------------------------


def test_claims_and_agreement_follow_the_labeler():
    assert sentence_claims("there is a small left pleural effusion") == {"Pleural Effusion": 1}
    assert sentence_claims("no pneumothorax") == {"Pneumothorax": 0}
    assert agrees(1, 1) and not agrees(1, -1) and not agrees(1, None) and not agrees(1, 0)
    assert agrees(-1, 1) and agrees(-1, -1) and not agrees(-1, None)
    assert agrees(0, 0) and agrees(0, None) and not agrees(0, 1) and not agrees(0, -1)


def test_support_is_the_share_of_agreeing_alternatives():
    sentences = ["there is a pleural effusion", "no pneumothorax", "the patient is here"]
    alternatives = [
        {"Pleural Effusion": 1, "Pneumothorax": 0},
        {"Pleural Effusion": None, "Pneumothorax": None},
        {"Pleural Effusion": 1, "Pneumothorax": 1},
        {"Pleural Effusion": 0, "Pneumothorax": 0},
    ]
    assert support_values(sentences, alternatives) == [0.5, 0.75, None]
    assert support_values(sentences, []) == [None, None, None]


def test_settings_refuse_nonsense():
    for bad in ({"samples": -1}, {"temperature": 0.0}, {"weak_below": 1.5}):
        with pytest.raises(ValueError):
            SupportSettings(**bad)
    assert SupportSettings().describe()["method"] == "temperature sampling"


def test_sampling_is_repeatable_and_stops_at_eos():
    eos, pad, bos, vocabulary = 1, 0, 2, 6
    logits = torch.log_softmax(torch.tensor([0.0, 0.5, -9.0, 1.0, 1.0, 1.0]), dim=0)

    def step(last, state):
        return logits.expand(len(last), -1).clone(), state, None

    def draw(seed):
        generator = torch.Generator().manual_seed(seed)
        return sample_sequences(
            step, batch_size=2, bos_id=bos, eos_id=eos, pad_id=pad, samples=3, temperature=1.0, max_length=12,
            device="cpu", init_state=torch.zeros(2, 1), generator=generator,
        )  # fmt: skip

    first = draw(0)
    assert first == draw(0) and len(first) == 2 and all(len(rows) == 3 for rows in first)
    for rows in first:
        for ids in rows:
            assert pad not in ids and bos not in ids and all(0 <= i < vocabulary for i in ids)
            assert eos not in ids[:-1] and (ids[-1] == eos or len(ids) == 12)


# -- through the pipeline ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(phantoms, tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    save_tiny_dcrrg(phantoms, root / "dcrrg", data_fingerprint="same")
    save_tiny_uar(phantoms, root / "uar", data_fingerprint="same")
    for kind in ("dcrrg", "uar"):
        command = ["index", "--checkpoint", str(root / kind), "--data", str(phantoms), "--workers", "0"]
        assert main(command) == 0
        assert calibration_path(root / kind).is_file()
    return root


@pytest.fixture(scope="module")
def pipeline(checkpoints):
    return ReviewPipeline.from_checkpoints(
        checkpoints, device="cpu", beam_size=2, support=SupportSettings(samples=4)
    )


def _views(phantoms, split="test", k=0):
    record = read_annotation(phantoms)[split][k]
    return [str(phantoms / "images" / path) for path in record.image_paths]


def test_every_result_carries_the_domain_check_and_sentence_support(pipeline, phantoms):
    result = pipeline.review(_views(phantoms))
    assert result.domain is not None and set(result.domain.models) == {"dcrrg", "uar"}
    for model in result.domain.models.values():
        assert model["threshold"] >= 0 and model["score"] >= 0 and model["train_studies"] > 0
    assert result.support == {**SupportSettings(samples=4).describe()}
    for draft in result.drafts.values():
        assert len(draft.support) == len(draft.sentences)
        assert all(v is None or 0.0 <= v <= 1.0 for v in draft.support)
    again = pipeline.review(_views(phantoms))
    assert {k: d.support for k, d in again.drafts.items()} == {k: d.support for k, d in result.drafts.items()}
    back = ReviewResult.from_json(result.to_json())
    assert back.domain == result.domain and back.support == result.support
    assert {"support_dcrrg", "support_uar"} <= set(result.timings)


def test_a_study_beyond_the_threshold_is_flagged_with_a_message(pipeline, phantoms):
    model = pipeline.models["uar"]
    saved = model.domain
    far = _calibration(-1.0, train_studies=saved.calibration.train_studies)  # everything is beyond it
    model.domain = DomainModel(far, saved.mean, saved.precision)
    try:
        result = pipeline.review(_views(phantoms))
    finally:
        model.domain = saved
    assert not result.domain.in_domain and "treat the drafts as meaningless" in result.domain.message
    assert result.domain.models["dcrrg"]["in_domain"] is not None


def test_support_off_and_no_calibration_leave_the_fields_empty(checkpoints, phantoms):
    quiet = ReviewPipeline.from_checkpoints(
        checkpoints, device="cpu", beam_size=1, support=SupportSettings(samples=0)
    )
    for model in quiet.models.values():
        model.domain = None
    result = quiet.review(_views(phantoms))
    assert result.domain is None and result.support is None
    assert all(d.support == [] for d in result.drafts.values())


def test_odd_images_still_get_drafts_and_a_domain_check(pipeline):
    noise = (np.random.default_rng(0).random((96, 96)) * 255).astype(np.uint8)
    result = pipeline.review([noise])
    assert set(result.drafts) == {"dcrrg", "uar"} and result.domain is not None


def _outside_inputs() -> dict[str, object]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from measure_trust import ood_inputs

    return ood_inputs()


@pytest.fixture(scope="module")
def larger(tmp_path_factory):
    """150 phantom studies (the shared 24 give a one-study validation split) with tiny random models."""
    from rrg_core.phantoms import write_phantoms

    root = tmp_path_factory.mktemp("ood")
    write_phantoms(root / "data", n=150, seed=1, size=64)
    save_tiny_dcrrg(root / "data", root / "runs" / "dcrrg")
    save_tiny_uar(root / "data", root / "runs" / "uar")
    for kind in ("dcrrg", "uar"):
        command = [
            "index",
            "--checkpoint",
            str(root / "runs" / kind),
            "--data",
            str(root / "data"),
            "--workers",
            "0",
        ]
        assert main(command) == 0
    support = SupportSettings(samples=0)
    return root / "data", ReviewPipeline.from_checkpoints(
        root / "runs", device="cpu", beam_size=1, support=support
    )


def test_phantoms_are_in_domain_and_outside_images_are_not(larger):
    """pydicom-data's real chest CR, matplotlib's photographs and synthetic non-radiographs are flagged;
    the phantoms' test studies mostly are not. Even the tiny random models of these tests tell them apart;
    with 21 validation studies their threshold is rough, so up to a fifth of the test studies may be
    flagged here (the demo models: 5 of 188, benchmarks/measure_trust.py)."""
    data, pipeline = larger
    tests = read_annotation(data)["test"]
    inside = [pipeline.review(_views(data, "test", k)).domain.in_domain for k in range(len(tests))]
    assert sum(inside) >= 0.8 * len(inside), f"{len(inside) - sum(inside)} of {len(inside)} flagged"
    flagged = {
        name: not pipeline.review([source]).domain.in_domain for name, source in _outside_inputs().items()
    }
    assert all(flagged.values()), [name for name, out in flagged.items() if not out]
