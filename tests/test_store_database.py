"""Opening the review database: URLs, SQLite settings, migrations and the schema's own guards, the command
line, and clear messages for a database that cannot be used. On SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from store_helpers import add_study, backend_params, fresh_url, save

from rrg_core.store import Store, StoreError, StoreUnavailableError, open_store
from rrg_core.store import database as store_database
from rrg_core.store.database import head_revision
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
    assert store_database.data_dir() == tmp_path / ".local" / "share" / "rrg-review"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # the XDG spec says: ignore a relative one
    assert store_database.data_dir() == tmp_path / ".local" / "share" / "rrg-review"


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
    assert store_database.resolve_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert store_database.resolve_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"


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


# --- the schema's own guards -----------------------------------------------------------------------


def test_the_database_itself_refuses_a_bad_status(store: Store):
    study = add_study(store)
    save(store, study.id, 0)
    with pytest.raises(DBAPIError), store.engine.begin() as connection:
        connection.execute(text("UPDATE reviews SET status = 'approved'"))
    assert store.latest_review(study.id).status == "draft"


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
    monkeypatch.setattr(store_database, "BUSY_TIMEOUT_S", 0.2)
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


def test_migrations_downgrade_and_upgrade_again(store_url: str):
    from alembic import command

    from rrg_core.store.database import alembic_config

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
