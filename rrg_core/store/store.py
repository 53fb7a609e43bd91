"""The review store: studies, their images and drafts, reviews with optimistic locking, audit events.

Use :func:`open_store` (an SQLAlchemy URL: a SQLite file by default, PostgreSQL for a team).
Every method validates its input, runs in one transaction and returns frozen records; none
returns ORM objects, so nothing the caller holds can write to the database behind its back.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError

from rrg_core.store import reads, records, validate, writes
from rrg_core.store.database import describe, make_engine, resolve_url, upgrade
from rrg_core.store.reads import StoreReads, current_review
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
from rrg_core.store.reviews import ReviewEdit, apply_edit, check_references

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
                    return records.to_study(writes.insert_study(session, study_hash, checked, source, actor))
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
    ) -> list[Draft]:
        """Store the models' drafts of a study in one transaction.

        ``disagreements`` (observation names on which the drafts disagree) replaces the study's
        list when given; the worklist filters on it.
        """
        study_id = validate.identifier(study_id, "study id")
        if isinstance(drafts, NewDraft) or not isinstance(drafts, Sequence) or not drafts:
            raise StoreError("add_drafts needs a list of at least one NewDraft")
        rows = [writes.draft_row(study_id, index, draft) for index, draft in enumerate(drafts)]
        flagged = None if disagreements is None else validate.observations(disagreements, "disagreements")
        actor = validate.name(actor, "actor")
        with self._write() as session:
            writes.insert_drafts(session, reads.study_row(session, study_id), rows, flagged, actor)
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
                check_references(session, edit)
                now = writes.utc_now()
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
                reads.study_row(session, study_id)
            return records.to_audit_event(writes.insert_event(session, actor, action, study_id, detail))
