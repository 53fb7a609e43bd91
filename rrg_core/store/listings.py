"""Reads across studies, inside the caller's session: the worklist, its reviewers, the export, the audit log.

The filters reach these already validated by :class:`~rrg_core.store.store.Store`.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from rrg_core.store import records
from rrg_core.store.reads import study_images
from rrg_core.store.records import UNREVIEWED, AuditEvent, ExportRecord, WorklistRow
from rrg_core.store.schema import AuditEventRow, ReviewRow, ReviewVersionRow, StudyRow


def worklist_rows(
    session: Session,
    status: str | None,
    reviewer: str | None,
    has_disagreement: bool | None,
    limit: int,
    offset: int,
) -> list[WorklistRow]:
    """Studies with the state of their review, most recently changed first (see ``Store.worklist``)."""
    changed = func.coalesce(ReviewRow.updated_at, StudyRow.created_at)
    query = select(StudyRow, ReviewRow).outerjoin(ReviewRow, ReviewRow.study_id == StudyRow.id)
    if status == UNREVIEWED:
        query = query.where(ReviewRow.id.is_(None))
    elif status is not None:
        query = query.where(ReviewRow.status == status)
    if reviewer is not None:
        query = query.where(
            exists().where(ReviewVersionRow.study_id == StudyRow.id, ReviewVersionRow.reviewer == reviewer)
        )
    if has_disagreement is not None:
        query = query.where(StudyRow.has_disagreement.is_(has_disagreement))
    query = query.order_by(changed.desc(), StudyRow.id.desc()).limit(limit).offset(offset)
    return [
        WorklistRow(
            study=records.to_study(study),
            status=review.status if review is not None else UNREVIEWED,
            reviewer=review.reviewer if review is not None else None,
            version=review.version if review is not None else 0,
            updated_at=review.updated_at if review is not None else None,
        )
        for study, review in session.execute(query)
    ]


def reviewer_names(session: Session) -> list[str]:
    """Everyone who saved a review version, alphabetically."""
    return list(session.scalars(select(ReviewVersionRow.reviewer).distinct().order_by("reviewer")))


def export_records(session: Session, status: str | None) -> Iterator[ExportRecord]:
    """The studies whose current review has ``status`` (None: any), with their images, by study id."""
    query = select(StudyRow, ReviewRow).join(ReviewRow, ReviewRow.study_id == StudyRow.id)
    if status is not None:
        query = query.where(ReviewRow.status == status)
    for study, review in session.execute(query.order_by(StudyRow.id)).all():
        images = tuple(study_images(session, study.id))
        yield ExportRecord(records.to_study(study), records.to_review_version(review), images)


def audit_events(session: Session, study_id: int | None, limit: int) -> list[AuditEvent]:
    """The last ``limit`` audit events (of one study, or all), oldest first."""
    query = select(AuditEventRow)
    if study_id is not None:
        query = query.where(AuditEventRow.study_id == study_id)
    rows = session.scalars(query.order_by(AuditEventRow.id.desc()).limit(limit)).all()
    return [records.to_audit_event(r) for r in reversed(rows)]
