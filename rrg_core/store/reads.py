"""The store's reads: one study and its parts, the worklist, the corrections export, the audit log.

:class:`StoreReads` is the read half of :class:`~rrg_core.store.store.Store` (which adds the saves).
Each method validates its input, reads in one transaction (one snapshot of the database) and
returns frozen records. The module's functions query inside a session the caller holds, so that
one transaction can read several parts of a study, and a save can look up what it changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session

from rrg_core.corrections import summarise
from rrg_core.store import records, validate
from rrg_core.store.database import StoreConnection
from rrg_core.store.records import (
    REVIEW_STATUSES,
    UNREVIEWED,
    AuditEvent,
    Draft,
    ExportRecord,
    OpenedStudy,
    ReviewVersion,
    StoreError,
    Study,
    StudyImage,
    WorklistRow,
)
from rrg_core.store.schema import (
    AuditEventRow,
    DraftRow,
    ImageRow,
    ReviewRow,
    ReviewVersionRow,
    StudyImageRow,
    StudyRow,
)


class StoreReads(StoreConnection):
    """Queries of the review database; :class:`~rrg_core.store.store.Store` adds the saves."""

    # --- one study -----------------------------------------------------------------------------

    def get_study(self, study_id: int) -> Study:
        """The study with this id; :class:`StoreError` when there is none."""
        study_id = validate.identifier(study_id, "study id")
        with self._read() as session:
            return records.to_study(study_row(session, study_id))

    def find_study(self, study_hash: str) -> Study | None:
        """The study stored with this content hash, if any."""
        study_hash = validate.content_hash(study_hash, "study content hash")
        with self._read() as session:
            row = study_by_hash(session, study_hash)
            return None if row is None else records.to_study(row)

    def study_images(self, study_id: int) -> list[StudyImage]:
        """The study's view images, in view order."""
        study_id = validate.identifier(study_id, "study id")
        with self._read() as session:
            study_row(session, study_id)
            return study_images(session, study_id)

    def drafts(self, study_id: int) -> list[Draft]:
        """The study's drafts, oldest first."""
        study_id = validate.identifier(study_id, "study id")
        with self._read() as session:
            study_row(session, study_id)
            return [records.to_draft(r) for r in draft_rows(session, study_id)]

    def latest_review(self, study_id: int) -> ReviewVersion | None:
        """The study's current review (None: not reviewed yet)."""
        study_id = validate.identifier(study_id, "study id")
        with self._read() as session:
            study_row(session, study_id)
            row = current_review(session, study_id)
            return None if row is None else records.to_review_version(row)

    def review_history(self, study_id: int) -> list[ReviewVersion]:
        """Every saved version of the study's review, oldest first."""
        study_id = validate.identifier(study_id, "study id")
        with self._read() as session:
            study_row(session, study_id)
            return review_history(session, study_id)

    def open_study(self, study_id: int) -> OpenedStudy:
        """A study with its drafts and review history, read in one transaction (what the editor shows)."""
        study_id = validate.identifier(study_id, "study id")
        with self._read() as session:
            study = records.to_study(study_row(session, study_id))
            drafts = tuple(records.to_draft(r) for r in draft_rows(session, study_id))
            return OpenedStudy(study, drafts, tuple(review_history(session, study_id)))

    # --- across studies ------------------------------------------------------------------------

    def worklist(
        self,
        status: str | None = None,
        reviewer: str | None = None,
        has_disagreement: bool | None = None,
        limit: int = 200,
        offset: int = 0,
        out_of_domain: bool | None = None,
    ) -> list[WorklistRow]:
        """Studies with the state of their review, most recently changed first.

        ``status``: draft, final or unreviewed; ``reviewer``: studies this reviewer saved a version
        of; ``has_disagreement``: only studies whose drafts disagree (True) or agree (False);
        ``out_of_domain``: only studies flagged out of domain (True) or not flagged (False: checked and
        in domain, or never checked).
        """
        if status is not None and status not in (*REVIEW_STATUSES, UNREVIEWED):
            raise StoreError(f"worklist status must be one of {', '.join((*REVIEW_STATUSES, UNREVIEWED))}")
        if reviewer is not None:
            reviewer = validate.name(reviewer, "reviewer filter")
        if has_disagreement is not None and not isinstance(has_disagreement, bool):
            raise StoreError("the disagreement filter must be True, False or None")
        if out_of_domain is not None and not isinstance(out_of_domain, bool):
            raise StoreError("the out-of-domain filter must be True, False or None")
        limit = validate.identifier(limit, "worklist limit")
        offset = validate.identifier(offset, "worklist offset", minimum=0)
        query = select(StudyRow, ReviewRow).outerjoin(ReviewRow, ReviewRow.study_id == StudyRow.id)
        if status == UNREVIEWED:
            query = query.where(ReviewRow.id.is_(None))
        elif status is not None:
            query = query.where(ReviewRow.status == status)
        if reviewer is not None:
            query = query.where(
                exists().where(
                    ReviewVersionRow.study_id == StudyRow.id, ReviewVersionRow.reviewer == reviewer
                )
            )
        if has_disagreement is not None:
            query = query.where(StudyRow.has_disagreement.is_(has_disagreement))
        if out_of_domain is True:
            query = query.where(StudyRow.out_of_domain.is_(True))
        elif out_of_domain is False:
            query = query.where(or_(StudyRow.out_of_domain.is_(False), StudyRow.out_of_domain.is_(None)))
        changed = func.coalesce(ReviewRow.updated_at, StudyRow.created_at)
        query = query.order_by(changed.desc(), StudyRow.id.desc()).limit(limit).offset(offset)
        with self._read() as session:
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

    def reviewers(self) -> list[str]:
        """Everyone who saved a review version, alphabetically (for the worklist's filter)."""
        with self._read() as session:
            return list(session.scalars(select(ReviewVersionRow.reviewer).distinct().order_by("reviewer")))

    def final_reviews(self, status: str | None = "final") -> Iterator[ExportRecord]:
        """The studies whose current review has ``status`` (None: any), with their images, by study id.

        A generator over one read transaction: the export sees one consistent state of the database.
        """
        if status is not None:
            status = validate.status(status)
        return self._export(status)

    def _export(self, status: str | None) -> Iterator[ExportRecord]:
        query = select(StudyRow, ReviewRow).join(ReviewRow, ReviewRow.study_id == StudyRow.id)
        if status is not None:
            query = query.where(ReviewRow.status == status)
        with self._read() as session:
            for study, review in session.execute(query.order_by(StudyRow.id)).all():
                images = tuple(study_images(session, study.id))
                yield ExportRecord(records.to_study(study), records.to_review_version(review), images)

    def correction_summaries(self) -> dict[str, dict[str, Any]]:
        """Per model name, :func:`rrg_core.corrections.summarise` of the current reviews that started
        from one of its drafts (the model card's "what reviewers correct")."""
        query = (
            select(DraftRow.model_name, ReviewRow.corrections)
            .join(DraftRow, DraftRow.id == ReviewRow.started_from_draft_id)
            .where(ReviewRow.corrections.is_not(None))
            .order_by(ReviewRow.id)
        )
        by_model: dict[str, list[dict[str, Any]]] = {}
        with self._read() as session:
            for name, corrections in session.execute(query):
                if isinstance(corrections, dict):
                    by_model.setdefault(name, []).append(corrections)
        return {name: summarise(items) for name, items in sorted(by_model.items())}

    def audit_events(self, study_id: int | None = None, limit: int = 1000) -> list[AuditEvent]:
        """The last ``limit`` audit events (of one study, or all), oldest first."""
        limit = validate.identifier(limit, "audit limit")
        if study_id is not None:
            study_id = validate.identifier(study_id, "study id")
        query = select(AuditEventRow)
        if study_id is not None:
            query = query.where(AuditEventRow.study_id == study_id)
        with self._read() as session:
            rows = session.scalars(query.order_by(AuditEventRow.id.desc()).limit(limit)).all()
            return [records.to_audit_event(r) for r in reversed(rows)]


def study_row(session: Session, study_id: int) -> StudyRow:
    """The study's row; :class:`StoreError` when there is none."""
    row = session.get(StudyRow, study_id)
    if row is None:
        raise StoreError(f"there is no study {study_id} in the review database")
    return row


def study_by_hash(session: Session, study_hash: str) -> StudyRow | None:
    """The row of the study stored with this content hash, if any."""
    return session.scalars(select(StudyRow).where(StudyRow.content_hash == study_hash)).one_or_none()


def draft_rows(session: Session, study_id: int) -> Sequence[DraftRow]:
    """The study's draft rows, oldest first."""
    return session.scalars(select(DraftRow).where(DraftRow.study_id == study_id).order_by(DraftRow.id)).all()


def current_review(session: Session, study_id: int) -> ReviewRow | None:
    """The study's current review row, as committed now."""
    return session.scalars(select(ReviewRow).where(ReviewRow.study_id == study_id)).one_or_none()


def review_history(session: Session, study_id: int) -> list[ReviewVersion]:
    """Every saved version of the study's review, oldest first."""
    rows = session.scalars(
        select(ReviewVersionRow)
        .where(ReviewVersionRow.study_id == study_id)
        .order_by(ReviewVersionRow.version)
    )
    return [records.to_review_version(r) for r in rows]


def study_images(session: Session, study_id: int) -> list[StudyImage]:
    """The study's view images, in view order."""
    query = (
        select(StudyImageRow, ImageRow)
        .join(ImageRow, ImageRow.id == StudyImageRow.image_id)
        .where(StudyImageRow.study_id == study_id)
        .order_by(StudyImageRow.position)
    )
    return [records.to_study_image(link, image) for link, image in session.execute(query)]
