"""The review store's studies, images, drafts and reviews (versions, history, optimistic locking) and the
validation of what they are given. On SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import text
from store_helpers import add_study, backend_params, fresh_url, png_bytes, save, two_drafts

from rrg_core.errors import RRGError
from rrg_core.observations import OBSERVATIONS
from rrg_core.store import (
    NewDraft,
    ReviewConflictError,
    Store,
    StoreError,
    ViewImage,
    content_hash,
    open_store,
)


@pytest.fixture(params=backend_params())
def store(request: pytest.FixtureRequest, tmp_path: Path):
    with fresh_url(request.param, tmp_path) as url, open_store(url) as opened:
        yield opened


# --- studies and images ----------------------------------------------------------------------------


def test_add_study_is_idempotent_by_content_hash(store: Store):
    study = add_study(store)
    again = add_study(store)
    assert again == study
    assert study.views == ("frontal", "lateral")
    assert study.source_name == "a.png"
    assert study.created_at.tzinfo == UTC
    assert store.find_study(content_hash(b"a")) == study
    assert store.find_study(content_hash(b"missing")) is None
    assert [e.action for e in store.audit_events(study.id)] == ["study.added"]  # added once


def test_study_images_round_trip_and_are_stored_once(store: Store):
    first = add_study(store, "a")
    images = store.study_images(first.id)
    assert [(i.position, i.view, i.width, i.height) for i in images] == [
        (0, "frontal", 8, 6),
        (1, "lateral", 8, 6),
    ]
    assert images[0].png == png_bytes(1)
    other = store.add_study(content_hash(b"b"), [ViewImage("PA", png_bytes(1))])  # same pixels as a's frontal
    assert store.study_images(other.id)[0].content_hash == images[0].content_hash
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM images")).scalar() == 2


def test_source_name_keeps_only_the_file_name(store: Store):
    study = store.add_study(content_hash(b"x"), [ViewImage("frontal", png_bytes())], "/data/SMITH^JOHN/x.dcm")
    assert study.source_name == "x.dcm"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("abc", [ViewImage("frontal", png_bytes())]), "sha256"),
        ((content_hash(b"x"), []), "at least one view"),
        ((content_hash(b"x"), [ViewImage("frontal", b"GIF89a not a png")]), "not a PNG"),
        ((content_hash(b"x"), [ViewImage("", png_bytes())]), "view name is empty"),
        ((content_hash(b"x"), [ViewImage("<b>frontal</b>", png_bytes())]), "< >"),
        ((content_hash(b"x"), [("frontal", png_bytes())]), "ViewImage"),
        ((content_hash(b"x"), [ViewImage("frontal", "png text")]), "PNG bytes"),
        ((content_hash(b"x"), [ViewImage("v", png_bytes())] * 9), "at most 8"),
    ],
)
def test_add_study_refuses_bad_input(store: Store, args, message: str):
    with pytest.raises(StoreError, match=message):
        store.add_study(*args)
    assert store.worklist() == []


def test_unknown_study_is_a_clear_error(store: Store):
    for call in (store.get_study, store.drafts, store.study_images, store.review_history, store.open_study):
        with pytest.raises(StoreError, match="no study 42"):
            call(42)
    with pytest.raises(StoreError, match="whole number"):
        store.get_study("1")


# --- drafts ----------------------------------------------------------------------------------------


def test_drafts_and_disagreements(store: Store):
    study = add_study(store)
    drafts = two_drafts(store, study.id, disagreements=["pleural_effusion", "Edema", "Edema"])
    assert [d.model_name for d in store.drafts(study.id)] == ["DCRRG", "UAR"]
    assert store.drafts(study.id) == drafts
    assert drafts[0].observations == {"Edema": {"label": 0, "probability": 0.2}}
    updated = store.get_study(study.id)
    assert updated.disagreements == ("Edema", "Pleural Effusion")  # canonical, unique, CheXpert order
    assert updated.has_disagreement
    store.add_drafts(study.id, [NewDraft("DCRRG", "0.2", "e" * 64, "clear.")], disagreements=[])
    assert not store.get_study(study.id).has_disagreement
    events = [e for e in store.audit_events(study.id) if e.action == "drafts.added"]
    assert events[0].detail["drafts"][1]["model"] == "UAR"


@pytest.mark.parametrize(
    ("drafts", "disagreements", "message"),
    [
        ([NewDraft("DCRRG", "1", "h", "text", {"p": float("nan")})], None, "no NaN"),
        ([NewDraft("DCRRG", "1", "h", "text", {"p": object()})], None, "plain JSON"),
        ([NewDraft("", "1", "h", "text")], None, "model name is empty"),
        ([NewDraft("DCRRG", "1", "h", 5)], None, "must be text"),
        ([NewDraft("DCRRG", "1", "h", "x" * 20_001)], None, "at most 20,000"),
        ([NewDraft("DCRRG", "1", "h", "bad\x00byte")], None, "control characters"),
        ([("DCRRG", "1", "h", "text")], None, "NewDraft"),
        ([], None, "at least one"),
        ([NewDraft("DCRRG", "1", "h", "text")], ["Heart Attack"], "unknown observation"),
        ([NewDraft("DCRRG", "1", "h", "text")], "Edema", "list of observation names"),
    ],
)
def test_add_drafts_refuses_bad_input(store: Store, drafts, disagreements, message: str):
    study = add_study(store)
    with pytest.raises(StoreError, match=message):
        store.add_drafts(study.id, drafts, disagreements=disagreements)
    assert store.drafts(study.id) == []
    assert not store.get_study(study.id).has_disagreement


# --- reviews ---------------------------------------------------------------------------------------


def test_save_review_versions_and_history(store: Store):
    study = add_study(store)
    drafts = two_drafts(store, study.id)
    opened = store.open_study(study.id)
    assert opened.version == 0 and opened.review is None and len(opened.drafts) == 2
    first = save(store, study.id, 0, started_from_draft_id=drafts[1].id, comment="check edema")
    assert first.version == 1 and first.started_from_draft_id == drafts[1].id
    assert first.labels == {**dict.fromkeys(OBSERVATIONS), "Edema": 1}
    second = save(store, study.id, 1, reviewer="dr_b", status="final", text="final report", labels={})
    assert store.latest_review(study.id) == second
    history = store.review_history(study.id)
    assert [(v.version, v.reviewer, v.status) for v in history] == [
        (1, "dr_a", "draft"),
        (2, "dr_b", "final"),
    ]
    assert history[0] == first and history[0].comment == "check edema"
    reopened = store.open_study(study.id)
    assert reopened.version == 2 and reopened.review == second and reopened.history == tuple(history)
    assert history[1].saved_at >= history[0].saved_at and history[1].saved_at.tzinfo == UTC
    assert store.latest_review(add_study(store, "other").id) is None


def test_stale_save_is_refused_and_keeps_the_edit(store: Store):
    study = add_study(store)
    save(store, study.id, 0)
    save(store, study.id, 1, reviewer="dr_b", text="dr_b's report")
    with pytest.raises(ReviewConflictError) as caught:
        save(store, study.id, 1, reviewer="dr_c", text="dr_c's careful edit", labels={"Fracture": -1})
    error = caught.value
    assert isinstance(error, RRGError)
    assert "changed since you opened it" in str(error)
    assert "dr_b" in str(error) and "version 2" in str(error) and "NOT saved" in str(error)
    assert error.unsaved_text == "dr_c's careful edit"
    assert error.unsaved_labels["Fracture"] == -1
    assert (error.current_version, error.expected_version, error.saved_by) == (2, 1, "dr_b")
    assert store.latest_review(study.id).text == "dr_b's report"
    assert len(store.review_history(study.id)) == 2
    refused = store.audit_events(study.id)[-1]
    assert (refused.action, refused.actor, refused.detail["current_version"]) == ("review.refused", "dr_c", 2)


def test_first_save_against_an_existing_review_and_a_future_version_are_refused(store: Store):
    study = add_study(store)
    with pytest.raises(ReviewConflictError, match="not a later one"):
        save(store, study.id, 3)
    save(store, study.id, 0)
    with pytest.raises(ReviewConflictError, match="changed since you opened it") as caught:
        save(store, study.id, 0, reviewer="dr_b", text="mine")
    assert caught.value.unsaved_text == "mine"
    assert len(store.review_history(study.id)) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "approved"}, "draft, final"),
        ({"status": None}, "draft, final"),
        ({"reviewer": ""}, "reviewer name is empty"),
        ({"reviewer": "   "}, "reviewer name is empty"),
        ({"reviewer": "x" * 10_000}, "at most 128"),
        ({"reviewer": "<script>alert(1)</script>"}, "< >"),
        ({"reviewer": 7}, "must be text"),
        ({"text": None}, "must be text"),
        ({"text": "x" * 20_001}, "at most 20,000"),
        ({"text": "   ", "status": "final"}, "empty report cannot be saved as final"),
        ({"labels": {"Edema": 2}}, "not one of 1, 0, -1"),
        ({"labels": {"Heart": 1}}, "unknown observation"),
        ({"labels": [1, 0]}, "labels must map"),
        ({"comment": "c" * 5_001}, "at most 5,000"),
        ({"expected_version": -1}, "at least 0"),
        ({"expected_version": "1"}, "whole number"),
        ({"expected_version": True}, "whole number"),
        ({"study_id": 99}, "no study 99"),
        ({"started_from_draft_id": 999}, "not a draft of study"),
    ],
)
def test_save_review_refuses_bad_input_and_changes_nothing(store: Store, change: dict, message: str):
    study = add_study(store)
    two_drafts(store, study.id)
    save(store, study.id, 0)
    args = {
        "study_id": study.id, "reviewer": "dr_a", "text": "report", "labels": {}, "status": "draft",
        "comment": "", "started_from_draft_id": None, "expected_version": 1, **change,
    }  # fmt: skip
    with pytest.raises(StoreError, match=message):
        store.save_review(**args)
    assert [v.version for v in store.review_history(study.id)] == [1]


def test_a_draft_of_another_study_cannot_be_the_starting_point(store: Store):
    study, other = add_study(store, "a"), add_study(store, "b")
    other_draft = two_drafts(store, other.id)[0]
    with pytest.raises(StoreError, match=f"draft {other_draft.id} is not a draft of study {study.id}"):
        save(store, study.id, 0, started_from_draft_id=other_draft.id)


def test_an_empty_draft_may_be_saved(store: Store):
    study = add_study(store)
    assert save(store, study.id, 0, text="").text == ""
