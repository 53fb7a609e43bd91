"""Helpers of the review store's tests: a fresh database per test on SQLite or PostgreSQL, and PNG bytes.

PostgreSQL runs when ``RRG_TEST_POSTGRES_URL`` names a server (``.ci/run`` starts one; locally:
``source .ci/postgres.sh && pg_test_start``); otherwise those cases skip, saying so. Each
PostgreSQL test gets its own schema (dropped afterwards), so the URL may name a shared database.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_ENV = "RRG_TEST_POSTGRES_URL"
BACKENDS = ("sqlite", "postgresql")


def backend_params() -> list:
    """``pytest.param`` per back end; PostgreSQL skips with a reason when no server is configured."""
    skip = pytest.mark.skipif(
        not os.environ.get(POSTGRES_ENV),
        reason=f"no PostgreSQL server: set {POSTGRES_ENV} (.ci/run does; or source .ci/postgres.sh "
        f"and run pg_test_start)",
    )
    return [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql", marks=skip)]


def postgres_admin_url() -> str:
    """The configured PostgreSQL URL with the psycopg driver."""
    url = make_url(os.environ[POSTGRES_ENV])
    return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


@contextmanager
def fresh_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a new SQLite file, or a new PostgreSQL schema (dropped afterwards)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
        return
    admin = create_engine(postgres_admin_url(), isolation_level="AUTOCOMMIT")
    schema = f"rrg_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(postgres_admin_url()).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def png_bytes(value: int = 128, size: tuple[int, int] = (8, 6)) -> bytes:
    """A small grey PNG whose pixels are all ``value``."""
    buffer = io.BytesIO()
    Image.new("L", size, value).save(buffer, format="PNG")
    return buffer.getvalue()
