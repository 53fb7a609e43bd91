"""The review store: studies, their images and drafts, reviews with optimistic locking, audit events.

Use :func:`open_store` (an SQLAlchemy URL: a SQLite file by default, PostgreSQL for a team).
Every method checks its input (:mod:`~rrg_core.store.validate`), runs in one transaction
(:mod:`~rrg_core.store.database`) and returns frozen records (:mod:`~rrg_core.store.records`); none
returns ORM objects, so nothing the caller holds can write to the database behind its back.

Saving a review (:meth:`Store.save_review`): the current review of a study is one ``reviews`` row
whose ``version`` counts the saves; every save also appends its full content to ``review_versions``
(the history the worklist reopens) and an ``audit_events`` row. A save names the version its
editor was opened at:

- version 0 (nobody has saved yet): the ``reviews`` row is inserted; a concurrent first save
  collides on the unique study id and loses (an :class:`IntegrityError`, read back as a conflict);
- version N: ``UPDATE ... WHERE version = N`` changes one row or none; none means someone
  saved after the editor was opened, and the save is refused with :class:`ReviewConflictError`.

The database decides who wins (the row lock or the unique index), not a read-then-write in
Python, so exactly one of any number of concurrent saves from the same version succeeds.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from rrg_core.corrections import classify
from rrg_core.store import records, validate
from rrg_core.store.database import describe, make_engine, resolve_url, upgrade
from rrg_core.store.reads import StoreReads, current_review, study_by_hash, study_row
from rrg_core.store.records import (
    AuditEvent,
    Draft,
    NewDraft,
    ReviewConflictError,
    ReviewVersion,
    StoreError,
    Study,
    ViewImage,
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

logger = logging.getLogger(__name__)

_RACE_RETRIES = 3
SYSTEM_ACTOR = "rrg-review"


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
        upgrade(engine)
    except DBAPIError as error:
        engine.dispose()
        raise describe(error, where) from error
    except BaseException:
        engine.dispose()
        raise
    return Store(engine, where)


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


class Store(StoreReads):
    """The review database: the reads of :class:`~rrg_core.store.reads.StoreReads` and the saves below.

    Build it with :func:`open_store`.
    """

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
        checked = validate.views(views)
        source = validate.source_name(source_name)
        actor = validate.name(actor, "actor")
        for attempt in range(_RACE_RETRIES):
            try:
                with self._write(races=True) as session:
                    return records.to_study(_insert_study(session, study_hash, checked, source, actor))
            except IntegrityError:
                # Another writer stored the same study or image first: the next attempt finds it.
                logger.debug("add_study: lost a race (attempt %d), retrying", attempt + 1)
        raise StoreError(f"could not store study {study_hash[:12]}: other saves kept colliding; try again")

    # --- drafts --------------------------------------------------------------------------------

    def add_drafts(
        self,
        study_id: int,
        drafts: Sequence[NewDraft],
        disagreements: Sequence[str] | None = None,
        actor: str = SYSTEM_ACTOR,
        domain: dict[str, Any] | None = None,
    ) -> list[Draft]:
        """Store the models' drafts of a study in one transaction.

        ``disagreements`` (observation names on which the drafts disagree) replaces the study's
        list when given; the worklist filters on it. ``domain`` (the result's out-of-domain check,
        ``{"in_domain": bool, ...}``) sets the study's out-of-domain flag when given; the worklist
        filters on that too.
        """
        study_id = validate.identifier(study_id, "study id")
        checked = validate.new_drafts(drafts)
        flagged = None if disagreements is None else validate.observations(disagreements, "disagreements")
        actor = validate.name(actor, "actor")
        if domain is not None:
            domain = validate.json_value(domain, "domain check")
            if not isinstance(domain, dict) or not isinstance(domain.get("in_domain"), bool):
                raise StoreError('the domain check must be a JSON object with a true/false "in_domain"')
        now = _utc_now()
        rows = [
            DraftRow(
                study_id=study_id, model_name=d.model_name, model_version=d.model_version,
                checkpoint_hash=d.checkpoint_hash, text=d.text, observations=d.observations, created_at=now,
            )
            for d in checked
        ]  # fmt: skip
        with self._write() as session:
            study = study_row(session, study_id)
            session.add_all(rows)
            if flagged is not None:
                study.disagreements, study.has_disagreement = flagged, bool(flagged)
            if domain is not None:
                study.out_of_domain, study.domain = not domain["in_domain"], domain
            session.flush()  # gives the rows their ids, which the audit event names
            added = [{"id": r.id, "model": r.model_name, "version": r.model_version} for r in rows]
            session.add(
                AuditEventRow(
                    study_id=study_id, actor=actor, action="drafts.added",
                    detail={
                        "drafts": added, "disagreements": flagged,
                        "out_of_domain": None if domain is None else not domain["in_domain"],
                    },
                    created_at=now,
                )
            )  # fmt: skip
            return [records.to_draft(r) for r in rows]

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
                now = _utc_now()  # SQLite: after BEGIN IMMEDIATE, so the stamps follow the order of saves
                version, corrections = _save_version(session, edit, now)
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
            started_from_draft_id=edit.started_from_draft_id, saved_at=now, corrections=corrections,
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
                study_row(session, study_id)
            row = AuditEventRow(
                study_id=study_id, actor=actor, action=action, detail=detail, created_at=_utc_now()
            )
            session.add(row)
            session.flush()  # gives the row its id
            return records.to_audit_event(row)


# --- inside a write transaction (the caller's session) --------------------------------------------


def _utc_now() -> datetime:
    """The time every stored row is stamped with (timezone-aware UTC)."""
    return datetime.now(UTC)


def _insert_study(
    session: Session, study_hash: str, views: Sequence[validate.CheckedView], source: str | None, actor: str
) -> StudyRow:
    """The study stored with this hash, or a new one with its images (each image once per content hash).

    A concurrent writer storing the same study or image makes the flush raise an IntegrityError.
    """
    found = study_by_hash(session, study_hash)
    if found is not None:
        return found
    now = _utc_now()
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


def _save_version(session: Session, edit: ReviewEdit, now: datetime) -> tuple[int, dict[str, Any] | None]:
    """Write ``edit`` as the next version, or raise :class:`ReviewConflictError`; returns the new version
    and its corrections (the labeler's reading of the draft it started from against its text).

    A first save (version 0) is an INSERT whose lost race surfaces as an IntegrityError at flush.
    """
    study_row(session, edit.study_id)
    corrections = None
    if edit.started_from_draft_id is not None:
        draft = session.get(DraftRow, edit.started_from_draft_id)
        if draft is None or draft.study_id != edit.study_id:
            raise StoreError(
                f"draft {edit.started_from_draft_id} is not a draft of study {edit.study_id}; "
                f"start from one of the study's drafts (or none)"
            )
        corrections = classify(draft.text, edit.text, model=draft.model_name)
    content = {
        "reviewer": edit.reviewer,
        "text": edit.text,
        "labels": edit.labels,
        "status": edit.status,
        "comment": edit.comment,
        "started_from_draft_id": edit.started_from_draft_id,
        "corrections": corrections,
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
                "corrections": None
                if corrections is None
                else [f"{f['category']}: {f['observation']}" for f in corrections["findings"]],
            },
            created_at=now,
        )
    )
    session.flush()
    return version, corrections
