"""The review store's queries, validation and error messages, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from store_helpers import backend_params, fresh_url, png_bytes

from rrg_core.errors import RRGError
from rrg_core.observations import OBSERVATIONS
from rrg_core.store import (
    NewDraft,
    ReviewConflictError,
    Store,
    StoreError,
    StoreUnavailableError,
    ViewImage,
    content_hash,
    open_store,
)
from rrg_core.store import engine as store_engine
from rrg_core.store.migrate import head_revision
from rrg_core.store.schema import Base

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=backend_params())
def store_url(request: pytest.FixtureRequest, tmp_path: Path):
    with fresh_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def store(store_url: str):
    with open_store(store_url) as opened:
        yield opened


def add_study(store: Store, name: str = "a", views: tuple[str, ...] = ("frontal", "lateral")):
    images = [ViewImage(view, png_bytes(10 * k + len(name))) for k, view in enumerate(views)]
    return store.add_study(content_hash(name.encode()), images, source_name=f"{name}.png")


def two_drafts(store: Store, study_id: int, disagreements=("Edema",)):
    return store.add_drafts(
        study_id,
        [
            NewDraft("DCRRG", "0.1", "c" * 64, "no edema.", {"Edema": {"label": 0, "probability": 0.2}}),
            NewDraft("UAR", "0.1", "d" * 64, "mild edema.", {"Edema": {"label": 1}}),
        ],
        disagreements=list(disagreements),
    )


def save(store: Store, study_id: int, version: int, reviewer: str = "dr_a", status: str = "draft", **kw):
    return store.save_review(
        study_id, reviewer, kw.pop("text", f"report v{version + 1}"), kw.pop("labels", {"Edema": 1}), status,
        expected_version=version, **kw,
    )  # fmt: skip


# --- opening ---------------------------------------------------------------------------------------


def test_default_database_is_sqlite_in_the_xdg_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    with open_store(None) as store:
        assert store.backend == "sqlite"
        assert store.url.endswith("xdg/rrg-review/rrg-review.sqlite")
        add_study(store)
    path = tmp_path / "xdg" / "rrg-review" / "rrg-review.sqlite"
    assert path.is_file()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_folder_without_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert store_engine.data_dir() == tmp_path / ".local" / "share" / "rrg-review"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # the XDG spec says: ignore a relative one
    assert store_engine.data_dir() == tmp_path / ".local" / "share" / "rrg-review"


def test_sqlite_connections_have_foreign_keys_wal_and_busy_timeout(tmp_path: Path):
    # A plain path means a SQLite file.
    with open_store(str(tmp_path / "plain path.sqlite")) as store, store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "unsupported database"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
        ("postgresql+asyncpg://u@h/db", "not supported"),
        ("", "non-empty"),
        ("::not a url::/x", None),
    ],
)
def test_bad_urls_are_refused_clearly(url: str, message: str | None, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if message is None:  # no "://": a (strange but legal) file name
        open_store(url).close()
        return
    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_postgresql_url_without_driver_means_psycopg():
    assert store_engine.resolve_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert store_engine.resolve_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"


def test_unreachable_postgresql_is_a_clear_message():
    with pytest.raises(StoreUnavailableError, match="cannot be reached") as caught:
        open_store("postgresql+psycopg://rrg:secret@127.0.0.1:9/none")
    assert "secret" not in str(caught.value)  # the password is never shown


def test_migrations_build_exactly_the_orm_schema(store: Store):
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert context.get_current_revision() == head_revision()
        assert compare_metadata(context, Base.metadata) == []


def test_reopening_keeps_data_and_does_not_migrate_again(store_url: str):
    with open_store(store_url) as store:
        study = add_study(store)
    with open_store(store_url) as store:
        assert store.get_study(study.id) == study


def test_a_database_from_a_newer_version_is_refused(store_url: str):
    with open_store(store_url) as store, store.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(StoreError, match="newer rrg-review"):
        open_store(store_url)


def test_store_imports_neither_torch_nor_gradio():
    code = "import sys, rrg_core.store; print(sorted({'torch', 'gradio'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


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


# --- worklist --------------------------------------------------------------------------------------


def test_worklist_filters(store: Store):
    agreed, disputed, unreviewed = add_study(store, "a"), add_study(store, "b"), add_study(store, "c")
    two_drafts(store, disputed.id)
    save(store, agreed.id, 0, reviewer="dr_a", status="final")
    save(store, disputed.id, 0, reviewer="dr_a")
    save(store, disputed.id, 1, reviewer="dr_b")

    def ids(**filters) -> list[int]:
        return [row.study.id for row in store.worklist(**filters)]

    assert ids() == [disputed.id, agreed.id, unreviewed.id]  # most recently changed first
    assert ids(status="final") == [agreed.id]
    assert ids(status="draft") == [disputed.id]
    assert ids(status="unreviewed") == [unreviewed.id]
    assert ids(reviewer="dr_a") == [disputed.id, agreed.id]  # anyone who saved a version
    assert ids(reviewer="dr_b") == [disputed.id]
    assert ids(reviewer="nobody") == []
    assert ids(has_disagreement=True) == [disputed.id]
    assert ids(has_disagreement=False) == [agreed.id, unreviewed.id]
    assert ids(status="draft", reviewer="dr_a", has_disagreement=True) == [disputed.id]
    assert ids(limit=1, offset=1) == [agreed.id]
    row = store.worklist(status="draft")[0]
    assert (row.status, row.reviewer, row.version) == ("draft", "dr_b", 2)
    empty = store.worklist(status="unreviewed")[0]
    assert (empty.status, empty.reviewer, empty.version, empty.updated_at) == ("unreviewed", None, 0, None)
    assert store.reviewers() == ["dr_a", "dr_b"]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"status": "done"}, "worklist status"),
        ({"reviewer": ""}, "empty"),
        ({"has_disagreement": "yes"}, "True, False or None"),
        ({"limit": 0}, "at least 1"),
        ({"offset": -1}, "at least 0"),
    ],
)
def test_worklist_refuses_bad_filters(store: Store, filters: dict, message: str):
    with pytest.raises(StoreError, match=message):
        store.worklist(**filters)


# --- export ----------------------------------------------------------------------------------------


def test_final_reviews_for_export(store: Store):
    final, draft = add_study(store, "a"), add_study(store, "b")
    add_study(store, "c")
    save(store, final.id, 0, status="final", text="first final")
    save(store, final.id, 1, status="final", text="second final")
    save(store, draft.id, 0, status="draft")
    exported = list(store.final_reviews())
    assert [(r.study.id, r.review.version, r.review.text) for r in exported] == [
        (final.id, 2, "second final")
    ]
    assert [i.view for i in exported[0].images] == ["frontal", "lateral"]
    assert exported[0].images[0].png.startswith(b"\x89PNG")
    assert [r.study.id for r in store.final_reviews(status="draft")] == [draft.id]
    assert [r.study.id for r in store.final_reviews(status=None)] == [final.id, draft.id]
    with pytest.raises(StoreError, match="draft, final"):
        store.final_reviews(status="approved")


# --- audit -----------------------------------------------------------------------------------------


def test_audit_events(store: Store):
    study = add_study(store)
    save(store, study.id, 0, reviewer="dr_a")
    store.record_event("dr_a", "study.viewed", study.id, {"tab": "attention"})
    login = store.record_event("dr_b", "login")
    events = store.audit_events(study.id)
    assert [(e.actor, e.action) for e in events] == [
        ("rrg-review", "study.added"),
        ("dr_a", "review.saved"),
        ("dr_a", "study.viewed"),
    ]
    assert events[1].detail["version"] == 1 and events[2].detail == {"tab": "attention"}
    assert store.audit_events()[-1] == login and login.study_id is None
    assert len(store.audit_events(limit=2)) == 2
    with pytest.raises(StoreError, match="JSON object"):
        store.record_event("dr_a", "x", None, ["not", "a", "dict"])
    with pytest.raises(StoreError, match="no study 77"):
        store.record_event("dr_a", "x", 77)


@pytest.mark.parametrize("table", ["audit_events", "review_versions"])
@pytest.mark.parametrize("statement", ["UPDATE {table} SET study_id = study_id", "DELETE FROM {table}"])
def test_history_tables_are_append_only(store: Store, table: str, statement: str):
    study = add_study(store)
    save(store, study.id, 0)
    with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as connection:
        connection.execute(text(statement.format(table=table)))
    assert len(store.review_history(study.id)) == 1


# --- an unusable database --------------------------------------------------------------------------


def test_read_only_sqlite_is_a_clear_message(tmp_path: Path):
    path = tmp_path / "store.sqlite"
    with open_store(str(path)) as store:
        study = add_study(store)
    with open_store(f"sqlite:///file:{path}?mode=ro&uri=true") as store:
        assert store.get_study(study.id) == study  # reading still works
        with pytest.raises(StoreUnavailableError, match="read-only") as caught:
            save(store, study.id, 0)
    assert "Nothing was changed" in str(caught.value)


def test_locked_sqlite_is_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(store_engine, "BUSY_TIMEOUT_S", 0.2)
    path = tmp_path / "store.sqlite"
    with open_store(str(path)) as store:
        study = add_study(store)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
        try:
            with pytest.raises(StoreUnavailableError, match="locked by another program"):
                save(store, study.id, 0)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert save(store, study.id, 0).version == 1  # and it works once the lock is gone


def test_a_file_that_is_not_a_database(tmp_path: Path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database " * 100)
    with pytest.raises(StoreUnavailableError, match="not a SQLite database"):
        open_store(str(path))


def test_the_database_itself_refuses_a_bad_status(store: Store):
    study = add_study(store)
    save(store, study.id, 0)
    with pytest.raises(DBAPIError), store.engine.begin() as connection:
        connection.execute(text("UPDATE reviews SET status = 'approved'"))
    assert store.latest_review(study.id).status == "draft"


def test_migrations_downgrade_and_upgrade_again(store_url: str):
    from alembic import command

    from rrg_core.store.migrate import alembic_config

    with open_store(store_url) as store:
        with store.engine.begin() as connection:
            command.downgrade(alembic_config(connection), "base")
        with store.engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() is None
    with open_store(store_url) as store:  # opening builds the schema again
        assert store.worklist() == []


def test_store_command_line(store_url: str, capsys: pytest.CaptureFixture[str]):
    from rrg_core.store.__main__ import main

    assert main(["upgrade", "--db", store_url]) == 0
    with open_store(store_url) as store:
        add_study(store)
    assert main(["info", "--db", store_url]) == 0
    out = capsys.readouterr().out
    assert f"schema {head_revision()}" in out and "1 studies, 0 reviewed" in out
    assert main(["info", "--db", "mysql://x@y/z"]) == 2
    assert "unsupported database" in capsys.readouterr().err
