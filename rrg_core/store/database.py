"""The review database itself: where it is, its engine, its schema revision and its transactions.

Engines: SQLite (WAL, busy timeout, foreign keys) or PostgreSQL (psycopg 3). SQLite write
transactions start with ``BEGIN IMMEDIATE``: the write lock is taken before the first read, so two
writers queue on the busy timeout instead of one failing at once with "database is locked" when its
read snapshot went stale (what a deferred ``BEGIN`` does in WAL mode).

Schema: opening a store runs :func:`upgrade`, which applies the Alembic migrations in
``migrations/``. Their configuration is built here rather than read from an ``alembic.ini``, so
the migrations travel inside the package and nothing at the repository root is needed. The
revision is read first (no lock when it is current); otherwise the upgrade runs in one
transaction that holds the database's write lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an
advisory lock), so two app processes opening a new database at once do not both create it.

Transactions (:func:`transaction`): every public store call runs in exactly one, committed whole at
the end of the block and rolled back whole on any error, so a failed save changes nothing; driver
errors become messages a reviewer can act on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Self

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from rrg_core.store.records import StoreError, StoreUnavailableError

logger = logging.getLogger(__name__)

APP_DIR = "rrg-review"
DEFAULT_FILE = "rrg-review.sqlite"
BUSY_TIMEOUT_S = 30.0
SQLITE_BEGIN = "rrg_sqlite_begin"  # execution option: "IMMEDIATE" for write transactions
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 7_305_118_452  # any fixed number: the advisory lock that serialises migrations


def data_dir() -> Path:
    """The user's data folder: ``$XDG_DATA_HOME/rrg-review``, else ``~/.local/share/rrg-review``."""
    base = os.environ.get("XDG_DATA_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return root / APP_DIR


def default_url() -> str:
    """The embedded default: a SQLite file in :func:`data_dir`."""
    return f"sqlite:///{data_dir() / DEFAULT_FILE}"


def resolve_url(url: str | None) -> URL:
    """Parse ``url`` (None: :func:`default_url`; a plain path: a SQLite file there) into a URL.

    Only SQLite files and PostgreSQL are accepted; ``postgresql://`` means the psycopg 3 driver.
    """
    if url is None:
        url = default_url()
    if not isinstance(url, str) or not url.strip():
        raise StoreError(f"database URL must be a non-empty string, got {url!r}")
    text = url.strip()
    if "://" not in text:  # a path: the friendliest way to name a SQLite file
        text = f"sqlite:///{Path(text).expanduser().resolve()}"
    try:
        parsed = make_url(text)
    except ArgumentError as error:
        raise StoreError(f"cannot read the database URL {_masked(text)!r}: {error}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise StoreError(f"SQLite driver {driver!r} is not supported; use sqlite:///PATH")
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise StoreError("an in-memory SQLite database would lose every review; give a file path")
        return parsed
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise StoreError(f"PostgreSQL driver {driver!r} is not supported; use postgresql+psycopg://...")
        return parsed.set(drivername="postgresql+psycopg")
    raise StoreError(
        f"unsupported database {backend!r} in {_masked(text)!r}: use sqlite:///PATH or "
        f"postgresql+psycopg://USER:PASSWORD@HOST/DB"
    )


def _masked(text: str) -> str:
    try:
        return make_url(text).render_as_string(hide_password=True)
    except ArgumentError:
        return text.split("@")[-1]


def make_engine(url: URL) -> Engine:
    """An engine for a URL from :func:`resolve_url`; SQLite connections are set up on connect."""
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    # pool_pre_ping: a team server restarts now and then; a dead pooled connection is replaced, not used.
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    is_uri = url.query.get("uri") in ("true", "1")
    if not is_uri:
        folder = Path(database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"cannot create the folder {folder} for the review database: {error}") from None
    engine = create_engine(
        url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}, pool_timeout=60
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own handling defers it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if "mode=ro" not in database and url.query.get("mode") != "ro":
                cursor.execute("PRAGMA journal_mode = WAL")
            # FULL: a save the app acknowledged survives a power cut, not only a crash.
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def reader(engine: Engine) -> Engine:
    """The same engine whose transactions read one snapshot (SQLite's WAL reads already do)."""
    if engine.dialect.name == "postgresql":
        # Read-only REPEATABLE READ transactions never fail to serialise; they only pin a snapshot.
        return engine.execution_options(isolation_level="REPEATABLE READ")
    return engine


def writer(engine: Engine) -> Engine:
    """The same engine (and pool) whose transactions are write transactions."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
    return engine


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration of the store; ``connection`` is the one migrations run on."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the store has no migrations"
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision a database is at (None: no schema yet)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database to :func:`head_revision`; refuse one made by a newer rrg-review."""
    head = head_revision()
    with engine.connect() as connection:
        current = current_revision(connection)
    if current == head:
        return
    _check_known(current)
    with writer(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        current = current_revision(connection)  # another process may have upgraded while we waited
        if current == head:
            return
        logger.info("review store: upgrading the schema from %s to %s", current or "empty", head)
        command.upgrade(alembic_config(connection), "head")


def _check_known(revision: str | None) -> None:
    if revision is None:
        return
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if revision not in known:
        raise StoreError(
            f"the review database is at schema revision {revision!r}, which this version of rrg-review "
            f"does not know (it knows up to {head_revision()!r}): it was written by a newer rrg-review; "
            f"upgrade the app rather than open it with this one"
        )


# Substrings of driver messages (SQLite, libpq) -> what the reviewer is told.
_REASONS: tuple[tuple[str, str], ...] = (
    ("readonly database", "is read-only (check the file's permissions, or open it with write access)"),
    ("read-only transaction", "is read-only (a standby server?); ask for a writable database URL"),
    ("database is locked", f"is locked by another program (waited {BUSY_TIMEOUT_S:.0f} s); try again"),
    ("unable to open database file", "cannot be opened (is the folder there and writable?)"),
    ("database or disk is full", "is full (no disk space left)"),
    ("disk i/o error", "had a disk error"),
    ("file is not a database", "is not a SQLite database file"),
    ("connection refused", "cannot be reached (is the database server running?)"),
    ("could not translate host name", "cannot be reached (unknown host name)"),
    ("timeout expired", "cannot be reached (the connection timed out)"),
    ("password authentication failed", "refused the user name or password"),
    ("does not exist", "does not exist on the server (create it first)"),
    ("server closed the connection", "closed the connection (was the server restarted?); try again"),
)


def describe(error: DBAPIError, where: str) -> StoreUnavailableError:
    """A :class:`StoreUnavailableError` whose message says what is wrong with the database at ``where``."""
    original = str(error.orig if error.orig is not None else error).strip().splitlines()
    detail = original[0] if original else type(error).__name__
    lowered = str(error.orig).lower()
    reason = next((told for key, told in _REASONS if key in lowered), None)
    if reason is None:
        reason = f"reported an error ({detail})"
    return StoreUnavailableError(f"the review database {where} {reason}. Nothing was changed by this request")


@contextmanager
def transaction(engine: Engine, where: str, *, write: bool, races: bool = False) -> Iterator[Session]:
    """A session in one transaction: committed when the block ends, rolled back on any error.

    Reads see one snapshot of the database for the whole block; writes hold the write lock
    (SQLite) or row locks (PostgreSQL) until the commit.

    Driver errors become :class:`StoreUnavailableError`. A broken constraint becomes :class:`StoreError`,
    unless ``races``: then the :class:`IntegrityError` reaches the caller, which treats it as a lost
    race (two writers inserting the same unique row) and reads what the winner wrote.
    """
    bind = writer(engine) if write else reader(engine)
    try:
        with Session(bind, expire_on_commit=False, autoflush=False) as session, session.begin():
            yield session
    except IntegrityError as error:
        if races:
            raise
        raise StoreError(f"the review database {where} refused the change: {error.orig}") from error
    except DBAPIError as error:
        raise describe(error, where) from error
    except SQLAlchemyError as error:
        logger.exception("review store error")
        raise StoreError(f"the review database {where} could not complete the request: {error}") from error


class StoreConnection:
    """An engine and the description of where it points (``at URL``), as error messages name it."""

    def __init__(self, engine: Engine, where: str) -> None:
        self._engine = engine
        self._where = where

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @property
    def url(self) -> str:
        """The database URL with any password hidden (fit for logs and pages)."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for administration and tests; data goes through the methods."""
        return self._engine

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> AbstractContextManager[Session]:
        return transaction(self._engine, self._where, write=False)

    def _write(self, races: bool = False) -> AbstractContextManager[Session]:
        return transaction(self._engine, self._where, write=True, races=races)
