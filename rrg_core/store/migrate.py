"""Create or upgrade a store's schema with its Alembic migrations, run from code.

The Alembic configuration is built here rather than read from an ``alembic.ini``, so the
migrations travel inside the package and nothing at the repository root is needed. Opening a
store upgrades it: the revision is read first (no lock when it is current); otherwise the
upgrade runs in one transaction that holds the database's write lock (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL: an advisory lock), so two app processes opening a new database at
once do not both create it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from rrg_core.store.engine import writer
from rrg_core.store.records import StoreError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 7_305_118_452  # any fixed number: the advisory lock that serialises migrations


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
