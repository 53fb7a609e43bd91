"""Transactions of the store and the translation of driver errors into messages a reviewer can act on.

Every public store call runs in exactly one transaction (:func:`transaction`): committed whole
at the end of the block, rolled back whole on any error, so a failed save changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from rrg_core.store.engine import BUSY_TIMEOUT_S, reader, writer
from rrg_core.store.records import StoreError, StoreUnavailableError

logger = logging.getLogger(__name__)

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
    reason = next((text for key, text in _REASONS if key in lowered), None)
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
    except (OperationalError, DBAPIError) as error:
        raise describe(error, where) from error
    except SQLAlchemyError as error:
        logger.exception("review store error")
        raise StoreError(f"the review database {where} could not complete the request: {error}") from error
