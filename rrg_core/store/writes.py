"""Adding a study (each image stored once), its drafts and audit events, inside one write transaction.

:class:`~rrg_core.store.store.Store` validates the input and opens the transaction; saving a
review, with its optimistic locking, is :mod:`rrg_core.store.reviews`' job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from rrg_core.store import validate
from rrg_core.store.records import NewDraft, StoreError
from rrg_core.store.schema import AuditEventRow, DraftRow, ImageRow, StudyImageRow, StudyRow

#: A validated view: its name, PNG bytes, width and height.
CheckedView = tuple[str, bytes, int, int]


def utc_now() -> datetime:
    """The time every stored row is stamped with (timezone-aware UTC)."""
    return datetime.now(UTC)


def insert_study(
    session: Session, study_hash: str, views: Sequence[CheckedView], source: str | None, actor: str
) -> StudyRow:
    """The study stored with this hash, or a new one with its images (each image once per content hash).

    A concurrent writer storing the same study or image makes the flush raise an IntegrityError.
    """
    found = session.scalars(select(StudyRow).where(StudyRow.content_hash == study_hash)).one_or_none()
    if found is not None:
        return found
    now = utc_now()
    row = StudyRow(
        content_hash=study_hash, source_name=source, views=[v[0] for v in views], disagreements=[],
        has_disagreement=False, created_at=now,
    )  # fmt: skip
    session.add(row)
    session.flush()
    for position, (view, data, width, height) in enumerate(views):
        image_hash = hashlib.sha256(data).hexdigest()
        image = session.scalars(select(ImageRow).where(ImageRow.content_hash == image_hash)).one_or_none()
        if image is None:
            image = ImageRow(content_hash=image_hash, png=data, width=width, height=height)
            session.add(image)
            session.flush()
        session.add(StudyImageRow(study_id=row.id, position=position, view=view, image_id=image.id))
    session.add(
        AuditEventRow(
            study_id=row.id, actor=actor, action="study.added",
            detail={"views": row.views, "source_name": source}, created_at=now,
        )
    )  # fmt: skip
    session.flush()
    return row


def draft_row(study_id: int, index: int, draft: NewDraft) -> DraftRow:
    """The validated row of the ``index``-th draft to add (not yet in any session)."""
    if not isinstance(draft, NewDraft):
        raise StoreError(f"draft {index} must be a NewDraft, got {type(draft).__name__}")
    observations = validate.json_value(
        {} if draft.observations is None else draft.observations, f"draft {index} observations"
    )
    return DraftRow(
        study_id=study_id,
        model_name=validate.name(draft.model_name, f"draft {index} model name"),
        model_version=validate.name(draft.model_version, f"draft {index} model version"),
        checkpoint_hash=validate.name(draft.checkpoint_hash, f"draft {index} checkpoint hash"),
        text=validate.text(draft.text, f"draft {index} text", validate.MAX_REPORT),
        observations=observations,
        created_at=utc_now(),
    )


def insert_drafts(
    session: Session, study: StudyRow, rows: list[DraftRow], flagged: list[str] | None, actor: str
) -> None:
    """Add the draft rows to ``study``, replacing its disagreements when ``flagged`` is not None."""
    session.add_all(rows)
    if flagged is not None:
        study.disagreements, study.has_disagreement = flagged, bool(flagged)
    session.flush()
    session.add(
        AuditEventRow(
            study_id=study.id, actor=actor, action="drafts.added",
            detail={
                "drafts": [{"id": r.id, "model": r.model_name, "version": r.model_version} for r in rows],
                "disagreements": flagged,
            },
            created_at=rows[0].created_at,
        )
    )  # fmt: skip


def insert_event(
    session: Session, actor: str, action: str, study_id: int | None, detail: dict[str, Any]
) -> AuditEventRow:
    """Append one audit event row (flushed, so it has its id)."""
    row = AuditEventRow(study_id=study_id, actor=actor, action=action, detail=detail, created_at=utc_now())
    session.add(row)
    session.flush()
    return row
