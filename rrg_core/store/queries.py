"""The review store: studies, their images and drafts, reviews with optimistic locking, audit events.

Use :func:`open_store` (an SQLAlchemy URL: a SQLite file by default, PostgreSQL for a team).
Every method validates its input, runs in one transaction and returns frozen records; none
returns ORM objects, so nothing the caller holds can write to the database behind its back.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, exists, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from rrg_core.store import convert, migrate, validate
from rrg_core.store.engine import make_engine, resolve_url
from rrg_core.store.errors import ReviewConflictError, StoreError
from rrg_core.store.records import (
    REVIEW_STATUSES,
    UNREVIEWED,
    AuditEvent,
    Draft,
    ExportRecord,
    NewDraft,
    OpenedStudy,
    ReviewVersion,
    Study,
    StudyImage,
    ViewImage,
    WorklistRow,
)
from rrg_core.store.reviews import ReviewEdit, apply_edit, check_references, current_review
from rrg_core.store.schema import (
    AuditEventRow,
    DraftRow,
    ImageRow,
    ReviewRow,
    ReviewVersionRow,
    StudyImageRow,
    StudyRow,
)
from rrg_core.store.transactions import describe, transaction

logger = logging.getLogger(__name__)

_RACE_RETRIES = 3
SYSTEM_ACTOR = "rrg-review"


def _now() -> datetime:
    return datetime.now(UTC)


def content_hash(*parts: bytes) -> str:
    """sha256 of byte strings, each length-prefixed (so ``(b"ab", b"c")`` and ``(b"a", b"bc")`` differ).

    The caller hashes a study's pixels with it, e.g. ``content_hash(shape_bytes, array.tobytes())``.
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def open_store(url: str | None = None) -> Store:
    """Open (creating or upgrading its schema) the review database at ``url``.

    ``url`` is an SQLAlchemy URL (``sqlite:///PATH``, ``postgresql+psycopg://USER:PW@HOST/DB``) or a
    plain file path; None opens ``rrg-review.sqlite`` in the user's data folder (``$XDG_DATA_HOME``).
    """
    parsed = resolve_url(url)
    engine = make_engine(parsed)
    where = f"at {parsed.render_as_string(hide_password=True)}"
    try:
        migrate.upgrade(engine)
    except DBAPIError as error:
        engine.dispose()
        raise describe(error, where) from error
    except BaseException:
        engine.dispose()
        raise
    return Store(engine, where)


class Store:
    """Queries and saves of the review database (build it with :func:`open_store`)."""

    def __init__(self, engine: Engine, where: str) -> None:
        self._engine = engine
        self._where = where

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @property
    def url(self) -> str:
        """The database URL with any password hidden (fit for logs and pages)."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for administration and tests; data goes through the methods."""
        return self._engine

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> AbstractContextManager[Session]:
        return transaction(self._engine, self._where, write=False)

    def _write(self, races: bool = False) -> AbstractContextManager[Session]:
        return transaction(self._engine, self._where, write=True, races=races)

    # --- studies -------------------------------------------------------------------------------

    def add_study(
        self,
        study_hash: str,
        views: Sequence[ViewImage],
        source_name: str | None = None,
        actor: str = SYSTEM_ACTOR,
    ) -> Study:
        """Store a study and its view images, or return the one already stored with this hash.

        ``study_hash`` identifies the pixels (see :func:`content_hash`); ``views`` are the
        de-identified display images as PNG. Images are stored once per content hash.
        """
        study_hash = validate.content_hash(study_hash, "study content hash")
        if isinstance(views, ViewImage) or not isinstance(views, Sequence) or not views:
            raise StoreError("a study needs at least one view image (a list of ViewImage)")
        if len(views) > validate.MAX_VIEWS:
            raise StoreError(f"a study has at most {validate.MAX_VIEWS} views, got {len(views)}")
        checked = []
        for index, view in enumerate(views):
            if not isinstance(view, ViewImage):
                raise StoreError(f"view {index} must be a ViewImage, got {type(view).__name__}")
            data, width, height = validate.png(view.png, f"view {index} ({view.view!r})")
            checked.append((validate.view_name(view.view), data, width, height))
        source = validate.source_name(source_name)
        actor = validate.name(actor, "actor")
        for attempt in range(_RACE_RETRIES):
            try:
                with self._write(races=True) as session:
                    return self._add_study(session, study_hash, checked, source, actor)
            except IntegrityError:
                # Another writer stored the same study or image first: the next attempt finds it.
                logger.debug("add_study: lost a race (attempt %d), retrying", attempt + 1)
        raise StoreError(f"could not store study {study_hash[:12]}: other saves kept colliding; try again")

    def _add_study(
        self,
        session: Session,
        study_hash: str,
        views: list[tuple[str, bytes, int, int]],
        source: str | None,
        actor: str,
    ) -> Study:
        found = session.scalars(select(StudyRow).where(StudyRow.content_hash == study_hash)).one_or_none()
        if found is not None:
            return convert.study(found)
        now = _now()
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
        return convert.study(row)

    def get_study(self, study_id: int) -> Study:
        """The study with this id; :class:`StoreError` when there is none."""
        study_id = validate.identifier(study_id, "study id")
        with self._read() as session:
            return convert.study(_study_row(session, study_id))

    def find_study(self, study_hash: str) -> Study | None:
        """The study stored with this content hash, if any."""
        study_hash = validate.content_hash(study_hash, "study content hash")
        with self._read() as session:
            row = session.scalars(select(StudyRow).where(StudyRow.content_hash == study_hash)).one_or_none()
            return None if row is None else convert.study(row)

    def study_images(self, study_id: int) -> list[StudyImage]:
        """The study's view images, in view order."""
        study_id = validate.identifier(study_id, "study id")
        with self._read() as session:
            _study_row(session, study_id)
            return _images(session, study_id)

    # --- drafts --------------------------------------------------------------------------------

    def add_drafts(
        self,
        study_id: int,
        drafts: Sequence[NewDraft],
        disagreements: Sequence[str] | None = None,
        actor: str = SYSTEM_ACTOR,
    ) -> list[Draft]:
        """Store the models' drafts of a study in one transaction.

        ``disagreements`` (observation names on which the drafts disagree) replaces the study's
        list when given; the worklist filters on it.
        """
        study_id = validate.identifier(study_id, "study id")
        if isinstance(drafts, NewDraft) or not isinstance(drafts, Sequence) or not drafts:
            raise StoreError("add_drafts needs a list of at least one NewDraft")
        rows = [self._draft_row(study_id, index, draft) for index, draft in enumerate(drafts)]
        flagged = None if disagreements is None else validate.observations(disagreements, "disagreements")
        actor = validate.name(actor, "actor")
        with self._write() as session:
            study = _study_row(session, study_id)
            session.add_all(rows)
            if flagged is not None:
                study.disagreements, study.has_disagreement = flagged, bool(flagged)
            session.flush()
            session.add(
                AuditEventRow(
                    study_id=study_id, actor=actor, action="drafts.added",
                    detail={
                        "drafts": [
                            {"id": r.id, "model": r.model_name, "version": r.model_version} for r in rows
                        ],
                        "disagreements": flagged,
                    },
                    created_at=rows[0].created_at,
                )
            )  # fmt: skip
            return [convert.draft(r) for r in rows]

    @staticmethod
    def _draft_row(study_id: int, index: int, draft: NewDraft) -> DraftRow:
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
            created_at=_now(),
        )

    def drafts(self, study_id: int) -> list[Draft]:
        """The study's drafts, oldest first."""
        study_id = validate.identifier(study_id, "study id")
        with self._read() as session:
            _study_row(session, study_id)
            return [convert.draft(r) for r in _drafts(session, study_id)]

    # --- reviews -------------------------------------------------------------------------------

    def save_review(
        self,
        study_id: int,
        reviewer: str,
        text: str,
        labels: dict[str, Any] | None,
        status: str,
        comment: str = "",
        started_from_draft_id: int | None = None,
        expected_version: int = 0,
    ) -> ReviewVersion:
        """Save a new version of the study's review, unless someone saved since the editor opened.

        ``expected_version`` is the version the editor showed (:attr:`OpenedStudy.version`; 0 when
        the study had no review). When the stored version differs, nothing is written and
        :class:`ReviewConflictError` is raised; it says who saved when, and carries the unsaved edit.
        """
        edit = ReviewEdit(
            study_id=validate.identifier(study_id, "study id"),
            reviewer=validate.name(reviewer, "reviewer name"),
            text=validate.text(text, "report text", validate.MAX_REPORT),
            labels=validate.labels(labels),
            status=validate.status(status),
            comment=validate.text("" if comment is None else comment, "comment", validate.MAX_COMMENT),
            started_from_draft_id=None
            if started_from_draft_id is None
            else validate.identifier(started_from_draft_id, "started-from draft id"),
            expected_version=validate.identifier(expected_version, "expected version", minimum=0),
        )
        if edit.status == "final" and not edit.text.strip():
            raise StoreError(
                "an empty report cannot be saved as final: write the report, or save it as a draft"
            )
        try:
            with self._write(races=True) as session:
                check_references(session, edit)
                now = _now()
                version = apply_edit(session, edit, now)
        except IntegrityError as error:
            # Only a concurrent first save breaks a constraint here: read what the winner wrote.
            with self._read() as session:
                current = current_review(session, edit.study_id)
                if current is None or current.version == edit.expected_version:
                    refused = f"the review database {self._where} refused the save: {error.orig}"
                    raise StoreError(refused) from error
                conflict = edit.conflict(current)
            self._refused(edit, conflict)
            raise conflict from None
        except ReviewConflictError as conflict:
            self._refused(edit, conflict)
            raise
        return ReviewVersion(
            study_id=edit.study_id, version=version, reviewer=edit.reviewer, text=edit.text,
            labels=dict(edit.labels), status=edit.status, comment=edit.comment,
            started_from_draft_id=edit.started_from_draft_id, saved_at=now,
        )  # fmt: skip

    def _refused(self, edit: ReviewEdit, conflict: ReviewConflictError) -> None:
        """Audit a refused save (its own transaction: the save's was rolled back)."""
        try:
            self.record_event(
                edit.reviewer, "review.refused", edit.study_id,
                {"expected_version": edit.expected_version, "current_version": conflict.current_version},
            )  # fmt: skip
        except StoreError:
            logger.warning("could not audit the refused save of study %d", edit.study_id, exc_info=True)

    def latest_review(self, study_id: int) -> ReviewVersion | None:
        """The study's current review (None: not reviewed yet)."""
        study_id = validate.identifier(study_id, "study id")
        with self._read() as session:
            _study_row(session, study_id)
            row = current_review(session, study_id)
            return None if row is None else convert.review_version(row)

    def review_history(self, study_id: int) -> list[ReviewVersion]:
        """Every saved version of the study's review, oldest first."""
        study_id = validate.identifier(study_id, "study id")
        with self._read() as session:
            _study_row(session, study_id)
            return _history(session, study_id)

    def open_study(self, study_id: int) -> OpenedStudy:
        """A study with its drafts and review history, read in one transaction (what the editor shows)."""
        study_id = validate.identifier(study_id, "study id")
        with self._read() as session:
            study = convert.study(_study_row(session, study_id))
            drafts = tuple(convert.draft(r) for r in _drafts(session, study_id))
            return OpenedStudy(study, drafts, tuple(_history(session, study_id)))

    # --- worklist and export -------------------------------------------------------------------

    def worklist(
        self,
        status: str | None = None,
        reviewer: str | None = None,
        has_disagreement: bool | None = None,
        limit: int = 200,
        offset: int = 0,
    ) -> list[WorklistRow]:
        """Studies with the state of their review, most recently changed first.

        ``status``: draft, final or unreviewed; ``reviewer``: studies this reviewer saved a version
        of; ``has_disagreement``: only studies whose drafts disagree (True) or agree (False).
        """
        if status is not None and status not in (*REVIEW_STATUSES, UNREVIEWED):
            raise StoreError(f"worklist status must be one of {', '.join((*REVIEW_STATUSES, UNREVIEWED))}")
        if reviewer is not None:
            reviewer = validate.name(reviewer, "reviewer filter")
        if has_disagreement is not None and not isinstance(has_disagreement, bool):
            raise StoreError("the disagreement filter must be True, False or None")
        limit = validate.identifier(limit, "worklist limit")
        offset = validate.identifier(offset, "worklist offset", minimum=0)
        changed = func.coalesce(ReviewRow.updated_at, StudyRow.created_at)
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
        query = query.order_by(changed.desc(), StudyRow.id.desc()).limit(limit).offset(offset)
        with self._read() as session:
            return [
                WorklistRow(
                    study=convert.study(study),
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
                images = tuple(_images(session, study.id))
                yield ExportRecord(convert.study(study), convert.review_version(review), images)

    # --- audit ---------------------------------------------------------------------------------

    def record_event(
        self, actor: str, action: str, study_id: int | None = None, detail: dict[str, Any] | None = None
    ) -> AuditEvent:
        """Append an audit event (a login, an export, ...): who, what, on which study, with JSON detail."""
        actor = validate.name(actor, "actor")
        action = validate.name(action, "action")
        if study_id is not None:
            study_id = validate.identifier(study_id, "study id")
        if detail is not None and not isinstance(detail, dict):
            raise StoreError(f"audit detail must be a JSON object (dict), got {type(detail).__name__}")
        detail = validate.json_value(detail or {}, "audit detail")
        with self._write() as session:
            if study_id is not None:
                _study_row(session, study_id)
            row = AuditEventRow(
                study_id=study_id, actor=actor, action=action, detail=detail, created_at=_now()
            )
            session.add(row)
            session.flush()
            return convert.audit_event(row)

    def audit_events(self, study_id: int | None = None, limit: int = 1000) -> list[AuditEvent]:
        """The last ``limit`` audit events (of one study, or all), oldest first."""
        limit = validate.identifier(limit, "audit limit")
        query = select(AuditEventRow)
        if study_id is not None:
            study_id = validate.identifier(study_id, "study id")
            query = query.where(AuditEventRow.study_id == study_id)
        with self._read() as session:
            rows = session.scalars(query.order_by(AuditEventRow.id.desc()).limit(limit)).all()
            return [convert.audit_event(r) for r in reversed(rows)]


def _study_row(session: Session, study_id: int) -> StudyRow:
    row = session.get(StudyRow, study_id)
    if row is None:
        raise StoreError(f"there is no study {study_id} in the review database")
    return row


def _drafts(session: Session, study_id: int) -> Sequence[DraftRow]:
    return session.scalars(select(DraftRow).where(DraftRow.study_id == study_id).order_by(DraftRow.id)).all()


def _history(session: Session, study_id: int) -> list[ReviewVersion]:
    rows = session.scalars(
        select(ReviewVersionRow)
        .where(ReviewVersionRow.study_id == study_id)
        .order_by(ReviewVersionRow.version)
    )
    return [convert.review_version(r) for r in rows]


def _images(session: Session, study_id: int) -> list[StudyImage]:
    query = (
        select(StudyImageRow, ImageRow)
        .join(ImageRow, ImageRow.id == StudyImageRow.image_id)
        .where(StudyImageRow.study_id == study_id)
        .order_by(StudyImageRow.position)
    )
    return [convert.study_image(link, image) for link, image in session.execute(query)]
