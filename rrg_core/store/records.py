"""What the store's queries return: frozen dataclasses, detached from any database session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
