"""The store's trust signals: a study's out-of-domain flag (and the worklist filter on it), the classified
corrections of every review version, their per-model summary, the export, and migration 0002 on a
database with data. On SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from store_helpers import add_study, backend_params, fresh_url

from rrg_core.corrections import (
    CHANGED_CERTAINTY,
    FALSE_NEGATION,
    FALSE_PREDICTION,
    category,
    classify,
    describe,
    summarise,
    summary_sentence,
)
from rrg_core.store import NewDraft, Store, StoreError, open_store
from rrg_core.store.database import alembic_config

OUT = {"in_domain": False, "score": 40.0, "threshold": 25.0, "message": "unlike", "models": {}}
IN = {"in_domain": True, "score": 10.0, "threshold": 25.0, "message": "", "models": {}}
DRAFT = "there is a small right pleural effusion . no pneumothorax . heart size is normal ."


@pytest.fixture(params=backend_params())
def store_url(request: pytest.FixtureRequest, tmp_path: Path):
    with fresh_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def store(store_url: str):
    with open_store(store_url) as opened:
        yield opened


# --- classification (no database) ---------------------------------------------------------------


def test_categories_follow_rexerr():
    assert category(1, 0) == category(1, None) == category(-1, 0) == FALSE_PREDICTION
    assert category(0, 1) == category(None, 1) == category(None, -1) == FALSE_NEGATION
    assert category(1, -1) == category(-1, 1) == CHANGED_CERTAINTY
    assert category(0, None) is category(None, 0) is category(1, 1) is category(None, None) is None


def test_classify_reads_the_draft_and_the_final_text():
    final = "no pleural effusion . there is a small right pneumothorax . heart size is normal ."
    found = classify(DRAFT, final, model="DCRRG")
    pairs = {(f["observation"], f["category"]) for f in found["findings"]}
    assert pairs == {("Pleural Effusion", FALSE_PREDICTION), ("Pneumothorax", FALSE_NEGATION)}
    assert found["model"] == "DCRRG" and found["text_changed"] and not found["text_only"]
    hedged = classify(DRAFT, DRAFT.replace("there is a small", "possible small"))
    assert [(f["observation"], f["category"]) for f in hedged["findings"]] == [
        ("Pleural Effusion", CHANGED_CERTAINTY)
    ]
    reworded = classify(DRAFT, DRAFT.replace("right", "left"))
    assert reworded["findings"] == [] and reworded["text_only"]
    same = classify(DRAFT, DRAFT.upper())
    assert not same["text_changed"] and describe(same) == "no change"
    assert describe(found) == "false finding: Pleural Effusion; missed finding: Pneumothorax"
    assert describe(reworded) == "text only" and describe(None) == ""


def test_the_summary_reads_as_a_sentence():
    final = "no pleural effusion . no pneumothorax . heart size is normal ."
    summary = summarise([classify(DRAFT, final), classify(DRAFT, final), classify(DRAFT, DRAFT + " ok")])
    assert summary["reviews"] == 3 and summary["counts"] == {FALSE_PREDICTION: {"Pleural Effusion": 2}}
    sentence = summary_sentence("DCRRG", summary)
    assert (
        sentence
        == "DCRRG: reviewers removed 2 false Pleural Effusion in 3 reviews (1 with text-only changes)."
    )


# --- the store ---------------------------------------------------------------------------------------


def _drafts(store: Store, study_id: int, domain=None):
    return store.add_drafts(
        study_id,
        [NewDraft("DCRRG", "demo", "c" * 64, DRAFT), NewDraft("UAR", "demo", "d" * 64, "no acute disease .")],
        disagreements=["Pleural Effusion"],
        domain=domain,
    )


def test_the_out_of_domain_flag_is_kept_and_filtered_on(store: Store):
    outside, inside, unchecked = add_study(store, "x"), add_study(store, "y"), add_study(store, "z")
    _drafts(store, outside.id, OUT)
    _drafts(store, inside.id, IN)
    study = store.get_study(outside.id)
    assert study.out_of_domain is True and study.domain["score"] == 40.0
    assert (
        store.get_study(inside.id).out_of_domain is False
        and store.get_study(unchecked.id).out_of_domain is None
    )
    flagged = [row.study.id for row in store.worklist(out_of_domain=True)]
    others = {row.study.id for row in store.worklist(out_of_domain=False)}
    assert flagged == [outside.id] and others == {inside.id, unchecked.id}
    _drafts(store, outside.id, IN)  # drafted again with in-domain models: the flag follows
    assert store.get_study(outside.id).out_of_domain is False
    event = store.audit_events(outside.id)[-2]
    assert event.action == "drafts.added" and event.detail["out_of_domain"] is True
    for bad in ({"score": 1}, {"in_domain": "no"}, "outside"):
        with pytest.raises(StoreError, match="domain check"):
            _drafts(store, inside.id, bad)
    with pytest.raises(StoreError, match="out-of-domain filter"):
        store.worklist(out_of_domain="yes")


def test_every_saved_version_carries_its_corrections(store: Store, tmp_path: Path):
    study = add_study(store)
    dcrrg, _ = _drafts(store, study.id)
    final = "no pleural effusion . there is a small right pneumothorax . heart size is normal ."
    first = store.save_review(study.id, "dr_a", final, {}, "draft", started_from_draft_id=dcrrg.id)
    pairs = {(f["observation"], f["category"]) for f in first.corrections["findings"]}
    assert pairs == {("Pleural Effusion", FALSE_PREDICTION), ("Pneumothorax", FALSE_NEGATION)}
    second = store.save_review(study.id, "dr_a", final + " ok", {}, "final", expected_version=1)
    assert second.corrections is None  # started from no draft
    history = store.review_history(study.id)
    assert [v.corrections is not None for v in history] == [True, False]
    assert history[0].corrections == first.corrections
    other = add_study(store, "b")
    _, uar_b = _drafts(store, other.id)
    store.save_review(
        other.id,
        "dr_b",
        "no acute disease . mild cardiomegaly .",
        {},
        "final",
        started_from_draft_id=uar_b.id,
    )
    third = add_study(store, "c")
    dcrrg_c, _ = _drafts(store, third.id)
    store.save_review(third.id, "dr_b", DRAFT, {}, "final", started_from_draft_id=dcrrg_c.id)
    summaries = store.correction_summaries()
    assert (
        summaries["UAR"]["counts"] == {FALSE_NEGATION: {"Cardiomegaly": 1}}
        and summaries["UAR"]["reviews"] == 1
    )
    assert summaries["DCRRG"]["reviews"] == 1  # study a's current review started from no draft
    assert summaries["DCRRG"]["unchanged"] == 1
    saved = store.audit_events(other.id)[-1]
    assert saved.detail["corrections"] == ["false_negation: Cardiomegaly"]

    from train.export_corrections_cmd import export_corrections

    export_corrections(store, tmp_path / "out", status="final")
    entries = json.loads((tmp_path / "out" / "annotation.json").read_text())["train"]
    by_report = {entry["report"]: entry for entry in entries}
    assert (
        by_report["no acute disease . mild cardiomegaly ."]["corrections"]["findings"][0]["category"]
        == FALSE_NEGATION
    )


def test_migration_0002_keeps_the_data_of_0001_and_goes_back(store_url: str):
    with open_store(store_url) as store:
        study = add_study(store)
        draft, _ = _drafts(store, study.id, OUT)
        store.save_review(study.id, "dr_a", "no acute disease .", {}, "final", started_from_draft_id=draft.id)
        with store.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0001")
        with store.engine.connect() as connection:
            columns = connection.execute(text("SELECT * FROM review_versions")).keys()
            assert "corrections" not in columns
    with open_store(store_url) as store:  # opening upgrades 0001 -> head again
        assert store.get_study(study.id).out_of_domain is None  # the flag was dropped with its column
        review = store.latest_review(study.id)
        assert review.text == "no acute disease ." and review.corrections is None
        assert [row.study.id for row in store.worklist(out_of_domain=False)] == [study.id]
