"""What leaves the store: frozen records detached from any session, the errors it raises, and the
conversions of ORM rows into records (called inside the session that loaded the rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rrg_core.errors import RRGError
from rrg_core.observations import OBSERVATIONS
from rrg_core.store.schema import (
    AuditEventRow,
    DraftRow,
    ImageRow,
    ReviewRow,
    ReviewVersionRow,
    StudyImageRow,
    StudyRow,
)

REVIEW_STATUSES: tuple[str, ...] = ("draft", "final")
UNREVIEWED = "unreviewed"  # worklist status of a study nobody has saved a review of


@dataclass(frozen=True)
class ViewImage:
    """One view to store with a study: its name (frontal, lateral, ...) and a de-identified PNG."""

    view: str
    png: bytes


@dataclass(frozen=True)
class Study:
    """A stored study: no patient identifiers, only the pixels' hash and a display name."""

    id: int
    content_hash: str
    source_name: str | None
    views: tuple[str, ...]
    disagreements: tuple[str, ...]
    created_at: datetime
    #: The out-of-domain flag of its latest drafts (None: not checked) and the check as JSON.
    out_of_domain: bool | None = None
    domain: dict[str, Any] | None = None

    @property
    def has_disagreement(self) -> bool:
        """True when the two models' drafts disagree on at least one observation."""
        return bool(self.disagreements)


@dataclass(frozen=True)
class StudyImage:
    """The ``position``-th view of a study, as stored."""

    position: int
    view: str
    png: bytes
    width: int
    height: int
    content_hash: str


@dataclass(frozen=True)
class NewDraft:
    """A draft to add: which model (name, version, checkpoint hash) wrote what.

    ``observations`` is the per-observation output (label, probability, description per
    observation, for instance), any JSON value. PostgreSQL does not keep the key order of JSON
    objects: use a list (of rows) where the order matters.
    """

    model_name: str
    model_version: str
    checkpoint_hash: str
    text: str
    observations: Any = None


@dataclass(frozen=True)
class Draft:
    """A stored draft."""

    id: int
    study_id: int
    model_name: str
    model_version: str
    checkpoint_hash: str
    text: str
    observations: Any
    created_at: datetime


@dataclass(frozen=True)
class ReviewVersion:
    """One saved version of a study's review (version 1 is the first save)."""

    study_id: int
    version: int
    reviewer: str
    text: str
    labels: dict[str, int | None]
    status: str
    comment: str
    started_from_draft_id: int | None
    saved_at: datetime
    #: What the reviewer corrected in the draft it started from (:func:`rrg_core.corrections.classify`);
    #: None when it started from no draft, or was saved before corrections were recorded.
    corrections: dict[str, Any] | None = None


@dataclass(frozen=True)
class OpenedStudy:
    """Everything the editor shows for a study, read in one transaction."""

    study: Study
    drafts: tuple[Draft, ...]
    history: tuple[ReviewVersion, ...]  # oldest first

    @property
    def review(self) -> ReviewVersion | None:
        """The latest review version, if any."""
        return self.history[-1] if self.history else None

    @property
    def version(self) -> int:
        """The version to pass as ``expected_version`` when saving (0: not reviewed yet)."""
        return self.history[-1].version if self.history else 0


@dataclass(frozen=True)
class WorklistRow:
    """A study in the worklist with the state of its review."""

    study: Study
    status: str  # "draft", "final" or "unreviewed"
    reviewer: str | None
    version: int
    updated_at: datetime | None


@dataclass(frozen=True)
class AuditEvent:
    """An audit record: who did what, when."""

    id: int
    study_id: int | None
    actor: str
    action: str
    detail: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ExportRecord:
    """A reviewed study for the corrections export: its latest review and its images."""

    study: Study
    review: ReviewVersion
    images: tuple[StudyImage, ...]


# --- errors ------------------------------------------------------------------------------------


class StoreError(RRGError):
    """The store refused an operation (bad input, unknown study, a schema it cannot use)."""


class StoreUnavailableError(StoreError):
    """The database cannot be used right now: unreachable, read-only or locked by another program."""


class ReviewConflictError(StoreError):
    """A save was refused because someone saved the study after the caller opened it.

    Nothing is overwritten. The refused edit travels with the error (``unsaved_text``,
    ``unsaved_labels``, ``unsaved_status``, ``unsaved_comment``) so the page can give it
    back to the reviewer, who reopens the study and merges.
    """

    def __init__(
        self,
        *,
        study_id: int,
        expected_version: int,
        current_version: int,
        saved_by: str | None,
        saved_at: datetime | None,
        unsaved_text: str,
        unsaved_labels: dict[str, Any],
        unsaved_status: str,
        unsaved_comment: str,
    ) -> None:
        self.study_id = study_id
        self.expected_version = expected_version
        self.current_version = current_version
        self.saved_by = saved_by
        self.saved_at = saved_at
        self.unsaved_text = unsaved_text
        self.unsaved_labels = unsaved_labels
        self.unsaved_status = unsaved_status
        self.unsaved_comment = unsaved_comment
        super().__init__(self._message())

    def _message(self) -> str:
        if self.current_version < self.expected_version:
            # Only a caller's mistake gets here (a version it never read); the edit is kept all the same.
            who = f"it is at version {self.current_version}, not a later one"
        else:
            when = self.saved_at.strftime("%Y-%m-%d %H:%M:%S UTC") if self.saved_at else "an unknown time"
            who = f"version {self.current_version} was saved by {self.saved_by or 'someone'} at {when}"
        return (
            f"study {self.study_id} changed since you opened it: {who}, and you opened version "
            f"{self.expected_version}. Your edit was NOT saved and nothing was overwritten; your text is "
            f"kept. Reopen the study to see the new version, then merge your changes and save again."
        )


# --- rows -> records ----------------------------------------------------------------------------


def to_study(row: StudyRow) -> Study:
    """A study row as a :class:`Study`."""
    return Study(
        id=row.id,
        content_hash=row.content_hash,
        source_name=row.source_name,
        views=tuple(row.views),
        disagreements=tuple(row.disagreements),
        created_at=row.created_at,
        out_of_domain=row.out_of_domain,
        domain=row.domain,
    )


def to_study_image(link: StudyImageRow, image: ImageRow) -> StudyImage:
    """A view link and its image as a :class:`StudyImage`."""
    return StudyImage(link.position, link.view, image.png, image.width, image.height, image.content_hash)


def to_draft(row: DraftRow) -> Draft:
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


def to_review_version(row: ReviewVersionRow | ReviewRow) -> ReviewVersion:
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
        corrections=row.corrections,
    )


def to_audit_event(row: AuditEventRow) -> AuditEvent:
    """An audit row as an :class:`AuditEvent`."""
    return AuditEvent(row.id, row.study_id, row.actor, row.action, dict(row.detail), row.created_at)
