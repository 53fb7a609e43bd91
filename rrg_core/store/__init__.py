"""The review store: studies, drafts, reviews (optimistic locking, version history) and audit events.

SQLAlchemy 2.0 over SQLite (the embedded default, WAL mode) or PostgreSQL (a team's server);
the schema is made and upgraded by the Alembic migrations in ``migrations/``. Knows nothing of
torch or the UI: images come in as PNG bytes, drafts as text and JSON.

>>> store = open_store("sqlite:///reviews.sqlite")           # doctest: +SKIP
>>> study = store.add_study(hash_of_pixels, [ViewImage("frontal", png)])  # doctest: +SKIP
>>> opened = store.open_study(study.id)                        # doctest: +SKIP
>>> store.save_review(study.id, "dr_a", text, labels, "final",  # doctest: +SKIP
...                   expected_version=opened.version)
"""

from rrg_core.store.database import data_dir, default_url
from rrg_core.store.records import (
    REVIEW_STATUSES,
    UNREVIEWED,
    AuditEvent,
    Draft,
    ExportRecord,
    NewDraft,
    OpenedStudy,
    ReviewConflictError,
    ReviewVersion,
    StoreError,
    StoreUnavailableError,
    Study,
    StudyImage,
    ViewImage,
    WorklistRow,
)
from rrg_core.store.store import Store, content_hash, open_store

__all__ = [
    "REVIEW_STATUSES",
    "UNREVIEWED",
    "AuditEvent",
    "Draft",
    "ExportRecord",
    "NewDraft",
    "OpenedStudy",
    "ReviewConflictError",
    "ReviewVersion",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "Study",
    "StudyImage",
    "ViewImage",
    "WorklistRow",
    "content_hash",
    "data_dir",
    "default_url",
    "open_store",
]
