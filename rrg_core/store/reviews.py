"""Saving a review with optimistic locking, inside one write transaction.

The current review of a study is one ``reviews`` row whose ``version`` counts the saves; every
save also appends its full content to ``review_versions`` (the history the worklist reopens) and
an ``audit_events`` row. A save names the version its editor was opened at:

- version 0 (nobody has saved yet): the ``reviews`` row is inserted; a concurrent first save
  collides on the unique study id and loses (the caller sees an :class:`IntegrityError`);
- version N: ``UPDATE ... WHERE version = N`` changes one row or none; none means someone
  saved after the editor was opened, and the save is refused with :class:`ReviewConflictError`.

The database decides who wins (the row lock or the unique index), not a read-then-write in
Python, so exactly one of any number of concurrent saves from the same version succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rrg_core.store.records import ReviewConflictError, StoreError
from rrg_core.store.schema import AuditEventRow, DraftRow, ReviewRow, ReviewVersionRow, StudyRow


@dataclass(frozen=True)
class ReviewEdit:
    """A validated save request."""

    study_id: int
    reviewer: str
    text: str
    labels: dict[str, int | None]
    status: str
    comment: str
    started_from_draft_id: int | None
    expected_version: int

    def conflict(self, current: ReviewRow | None) -> ReviewConflictError:
        """The refusal of this edit, given the review as it now stands."""
        return ReviewConflictError(
            study_id=self.study_id,
            expected_version=self.expected_version,
            current_version=current.version if current is not None else 0,
            saved_by=current.reviewer if current is not None else None,
            saved_at=current.updated_at if current is not None else None,
            unsaved_text=self.text,
            unsaved_labels=dict(self.labels),
            unsaved_status=self.status,
            unsaved_comment=self.comment,
        )


def check_references(session: Session, edit: ReviewEdit) -> None:
    """The study exists and the draft the review started from is one of its drafts."""
    if session.get(StudyRow, edit.study_id) is None:
        raise StoreError(f"there is no study {edit.study_id} in the review database")
    if edit.started_from_draft_id is not None:
        draft = session.get(DraftRow, edit.started_from_draft_id)
        if draft is None or draft.study_id != edit.study_id:
            raise StoreError(
                f"draft {edit.started_from_draft_id} is not a draft of study {edit.study_id}; "
                f"start from one of the study's drafts (or none)"
            )


def current_review(session: Session, study_id: int) -> ReviewRow | None:
    """The study's current review row, as committed now."""
    return session.scalars(select(ReviewRow).where(ReviewRow.study_id == study_id)).one_or_none()


def apply_edit(session: Session, edit: ReviewEdit, now: datetime) -> int:
    """Write ``edit`` as the next version, or raise :class:`ReviewConflictError`; returns the new version.

    A first save (version 0) is an INSERT whose lost race surfaces as an IntegrityError at flush.
    """
    content = {
        "reviewer": edit.reviewer,
        "text": edit.text,
        "labels": edit.labels,
        "status": edit.status,
        "comment": edit.comment,
        "started_from_draft_id": edit.started_from_draft_id,
    }
    version = edit.expected_version + 1
    if edit.expected_version == 0:
        session.add(ReviewRow(study_id=edit.study_id, version=1, created_at=now, updated_at=now, **content))
        session.flush()
    else:
        result = session.execute(
            update(ReviewRow)
            .where(ReviewRow.study_id == edit.study_id, ReviewRow.version == edit.expected_version)
            .values(version=version, updated_at=now, **content)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise edit.conflict(current_review(session, edit.study_id))
    session.add(ReviewVersionRow(study_id=edit.study_id, version=version, saved_at=now, **content))
    session.add(
        AuditEventRow(
            study_id=edit.study_id,
            actor=edit.reviewer,
            action="review.saved",
            detail={
                "version": version,
                "status": edit.status,
                "started_from_draft_id": edit.started_from_draft_id,
                "characters": len(edit.text),
            },
            created_at=now,
        )
    )
    session.flush()
    return version
