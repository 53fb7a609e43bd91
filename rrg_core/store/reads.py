"""The parts of one study, read inside the caller's session: its row, drafts, review history and images.

:class:`~rrg_core.store.store.Store` opens the transaction and validates the ids; these only query,
so that one transaction can read several parts of a study from the same snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from rrg_core.store import records
from rrg_core.store.records import ReviewVersion, StoreError, StudyImage
from rrg_core.store.schema import DraftRow, ImageRow, ReviewVersionRow, StudyImageRow, StudyRow


def study_row(session: Session, study_id: int) -> StudyRow:
    """The study's row; :class:`StoreError` when there is none."""
    row = session.get(StudyRow, study_id)
    if row is None:
        raise StoreError(f"there is no study {study_id} in the review database")
    return row


def draft_rows(session: Session, study_id: int) -> Sequence[DraftRow]:
    """The study's draft rows, oldest first."""
    return session.scalars(select(DraftRow).where(DraftRow.study_id == study_id).order_by(DraftRow.id)).all()


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
