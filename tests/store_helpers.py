"""Helpers of the review store's tests: a fresh database per test on SQLite or PostgreSQL, PNG bytes,
and the studies, drafts and saves the tests build their cases from.

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

from rrg_core.store import NewDraft, Store, ViewImage, content_hash

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


def add_study(store: Store, name: str = "a", views: tuple[str, ...] = ("frontal", "lateral")):
    """A study named ``name`` (its hash and ``name.png``), one small PNG per view."""
    images = [ViewImage(view, png_bytes(10 * k + len(name))) for k, view in enumerate(views)]
    return store.add_study(content_hash(name.encode()), images, source_name=f"{name}.png")


def two_drafts(store: Store, study_id: int, disagreements=("Edema",)):
    """A DCRRG and a UAR draft of the study, disagreeing on Edema."""
    return store.add_drafts(
        study_id,
        [
            NewDraft("DCRRG", "0.1", "c" * 64, "no edema.", {"Edema": {"label": 0, "probability": 0.2}}),
            NewDraft("UAR", "0.1", "d" * 64, "mild edema.", {"Edema": {"label": 1}}),
        ],
        disagreements=list(disagreements),
    )


def save(store: Store, study_id: int, version: int, reviewer: str = "dr_a", status: str = "draft", **kw):
    """Save the version after ``version`` (text "report v<next>" and Edema positive unless given)."""
    return store.save_review(
        study_id, reviewer, kw.pop("text", f"report v{version + 1}"), kw.pop("labels", {"Edema": 1}), status,
        expected_version=version, **kw,
    )  # fmt: skip
