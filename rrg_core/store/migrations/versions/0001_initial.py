"""The first schema: studies, images, drafts, reviews with their versions, audit events.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Written by hand (a migration is a frozen snapshot, so it does not import the ORM classes).
``review_versions`` and ``audit_events`` are append-only: triggers refuse UPDATE and DELETE.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
APPEND_ONLY = ("review_versions", "audit_events")


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("source_name", sa.String(255), nullable=True),
        sa.Column("views", JSON, nullable=False),
        sa.Column("disagreements", JSON, nullable=False),
        sa.Column("has_disagreement", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_studies"),
        sa.UniqueConstraint("content_hash", name="uq_studies_content_hash"),
    )
    op.create_index("ix_studies_has_disagreement", "studies", ["has_disagreement"])

    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("png", sa.LargeBinary(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("content_hash", name="uq_images_content_hash"),
    )

    op.create_table(
        "study_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("view", sa.String(32), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_study_images"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_study_images_study_id_studies"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_study_images_image_id_images"),
        sa.UniqueConstraint("study_id", "position", name="uq_study_images_study_position"),
    )
    op.create_index("ix_study_images_image_id", "study_images", ["image_id"])

    op.create_table(
        "drafts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("checkpoint_hash", sa.String(128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("observations", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_drafts"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_drafts_study_id_studies"),
    )
    op.create_index("ix_drafts_study_id", "drafts", ["study_id"])

    review_columns = (
        ("reviewer", sa.String(128)),
        ("text", sa.Text()),
        ("labels", JSON),
        ("status", sa.String(16)),
        ("comment", sa.Text()),
    )
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        *(sa.Column(name, kind, nullable=False) for name, kind in review_columns),
        sa.Column("started_from_draft_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_reviews_study_id_studies"),
        sa.ForeignKeyConstraint(
            ["started_from_draft_id"], ["drafts.id"], name="fk_reviews_started_from_draft_id_drafts"
        ),
        sa.UniqueConstraint("study_id", name="uq_reviews_study_id"),
        *_review_checks("reviews"),
    )
    for column in ("reviewer", "status", "updated_at"):
        op.create_index(f"ix_reviews_{column}", "reviews", [column])

    op.create_table(
        "review_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        *(sa.Column(name, kind, nullable=False) for name, kind in review_columns),
        sa.Column("started_from_draft_id", sa.Integer(), nullable=True),
        sa.Column("saved_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_review_versions"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_review_versions_study_id_studies"),
        sa.ForeignKeyConstraint(
            ["started_from_draft_id"], ["drafts.id"], name="fk_review_versions_started_from_draft_id_drafts"
        ),
        sa.UniqueConstraint("study_id", "version", name="uq_review_versions_study_version"),
        *_review_checks("review_versions"),
    )

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_audit_events_study_id_studies"),
    )
    op.create_index("ix_audit_events_study_id_id", "audit_events", ["study_id", "id"])

    _append_only_triggers()


def _review_checks(table: str) -> tuple[sa.CheckConstraint, ...]:
    """The database itself refuses a status or version the store would never write."""
    return (
        sa.CheckConstraint("status IN ('draft', 'final')", name=f"ck_{table}_status"),
        sa.CheckConstraint("version >= 1", name=f"ck_{table}_version"),
    )


def _append_only_triggers() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION rrg_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION rrg_refuse_change()"
            )
        return
    for table in APPEND_ONLY:
        for change in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{change.lower()} BEFORE {change} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def downgrade() -> None:
    tables = ("audit_events", "review_versions", "reviews", "drafts", "study_images", "images", "studies")
    for table in tables:
        op.drop_table(table)
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION rrg_refuse_change()")
