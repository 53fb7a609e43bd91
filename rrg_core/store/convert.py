"""ORM rows -> the frozen records that leave the store (read inside the session that loaded them)."""

from __future__ import annotations

from rrg_core.observations import OBSERVATIONS
from rrg_core.store.records import AuditEvent, Draft, ReviewVersion, Study, StudyImage
from rrg_core.store.schema import (
    AuditEventRow,
    DraftRow,
    ImageRow,
    ReviewRow,
    ReviewVersionRow,
    StudyImageRow,
    StudyRow,
)


def study(row: StudyRow) -> Study:
    """A study row as a :class:`Study`."""
    return Study(
        id=row.id,
        content_hash=row.content_hash,
        source_name=row.source_name,
        views=tuple(row.views),
        disagreements=tuple(row.disagreements),
        created_at=row.created_at,
    )


def study_image(link: StudyImageRow, image: ImageRow) -> StudyImage:
    """A view link and its image as a :class:`StudyImage`."""
    return StudyImage(link.position, link.view, image.png, image.width, image.height, image.content_hash)


def draft(row: DraftRow) -> Draft:
    """A draft row as a :class:`Draft`."""
    return Draft(
        id=row.id,
        study_id=row.study_id,
        model_name=row.model_name,
        model_version=row.model_version,
        checkpoint_hash=row.checkpoint_hash,
        text=row.text,
        observations=row.observations,
        created_at=row.created_at,
    )


def review_version(row: ReviewVersionRow | ReviewRow) -> ReviewVersion:
    """A version row (or the current review row) as a :class:`ReviewVersion`."""
    saved_at = row.saved_at if isinstance(row, ReviewVersionRow) else row.updated_at
    return ReviewVersion(
        study_id=row.study_id,
        version=row.version,
        reviewer=row.reviewer,
        text=row.text,
        # CheXpert order (PostgreSQL's JSONB keeps no key order).
        labels={name: row.labels.get(name) for name in OBSERVATIONS},
        status=row.status,
        comment=row.comment,
        started_from_draft_id=row.started_from_draft_id,
        saved_at=saved_at,
    )


def audit_event(row: AuditEventRow) -> AuditEvent:
    """An audit row as an :class:`AuditEvent`."""
    return AuditEvent(row.id, row.study_id, row.actor, row.action, dict(row.detail), row.created_at)
