"""The store's tables as SQLAlchemy 2.0 typed ORM classes.

The schema in a database is made by the Alembic migrations in ``migrations/versions``; these
classes describe the same tables for queries (a test checks that the two agree on SQLite and
PostgreSQL). Times are stored as naive UTC and read back as aware UTC on both back ends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints, so that later migrations can drop or alter them by name on both back ends.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

HASH_LENGTH = 64  # sha256, hex
NAME_LENGTH = 128


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC instant: stored without zone (SQLite has none), returned zone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("store times must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class StudyRow(Base):
    """One study: the views of one examination, identified by a hash of their pixels.

    No patient name or other identifier from a DICOM header is ever stored; ``source_name``
    is the display name the caller chose (a file's base name, say).
    """

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    source_name: Mapped[str | None] = mapped_column(String(255))
    views: Mapped[list[str]] = mapped_column(JSONType)
    # Observations on which the two models' drafts disagree (set with the drafts).
    disagreements: Mapped[list[str]] = mapped_column(JSONType)
    has_disagreement: Mapped[bool] = mapped_column(Boolean, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The out-of-domain check of the latest drafts (None: not checked); ``domain`` is its JSON form.
    out_of_domain: Mapped[bool | None] = mapped_column(Boolean, index=True, nullable=True)
    domain: Mapped[Any | None] = mapped_column(JSONType, nullable=True)


class ImageRow(Base):
    """A de-identified display image (PNG), stored once per content hash."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    png: Mapped[bytes] = mapped_column(LargeBinary)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)


class StudyImageRow(Base):
    """The ``position``-th view of a study (``view`` names it: frontal, lateral, ...)."""

    __tablename__ = "study_images"
    __table_args__ = (UniqueConstraint("study_id", "position", name="uq_study_images_study_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    position: Mapped[int] = mapped_column(Integer)
    view: Mapped[str] = mapped_column(String(32))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), index=True)


class DraftRow(Base):
    """A model's draft report of a study, with its per-observation output."""

    __tablename__ = "drafts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    model_version: Mapped[str] = mapped_column(String(NAME_LENGTH))
    checkpoint_hash: Mapped[str] = mapped_column(String(NAME_LENGTH))
    text: Mapped[str] = mapped_column(Text)
    observations: Mapped[Any] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReviewRow(Base):
    """The current review of a study; ``version`` counts its saves (optimistic locking)."""

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("status IN ('draft', 'final')", name="status"),
        CheckConstraint("version >= 1", name="version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    reviewer: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    text: Mapped[str] = mapped_column(Text)
    labels: Mapped[dict[str, int | None]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), index=True)
    comment: Mapped[str] = mapped_column(Text)
    started_from_draft_id: Mapped[int | None] = mapped_column(ForeignKey("drafts.id"))
    # What the reviewer corrected in the draft it started from (rrg_core.corrections.classify).
    corrections: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ReviewVersionRow(Base):
    """Every saved version of a review, append-only (a database trigger refuses updates and deletes)."""

    __tablename__ = "review_versions"
    __table_args__ = (
        UniqueConstraint("study_id", "version", name="uq_review_versions_study_version"),
        CheckConstraint("status IN ('draft', 'final')", name="status"),
        CheckConstraint("version >= 1", name="version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    version: Mapped[int] = mapped_column(Integer)
    reviewer: Mapped[str] = mapped_column(String(NAME_LENGTH))
    text: Mapped[str] = mapped_column(Text)
    labels: Mapped[dict[str, int | None]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str] = mapped_column(Text)
    started_from_draft_id: Mapped[int | None] = mapped_column(ForeignKey("drafts.id"))
    corrections: Mapped[Any | None] = mapped_column(JSONType, nullable=True)
    saved_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEventRow(Base):
    """Who did what, when: append-only (a database trigger refuses updates and deletes)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_study_id_id", "study_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"))
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    action: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
