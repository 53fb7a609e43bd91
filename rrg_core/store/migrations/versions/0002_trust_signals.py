"""Trust signals: the out-of-domain flag of a study, and the classified corrections of each review version.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06

``studies.out_of_domain`` (NULL: not checked, as for every study stored before this revision) and
``studies.domain`` (the pipeline's check: score, threshold, message, per model); ``reviews.corrections``
and ``review_versions.corrections`` (:func:`rrg_core.corrections.classify` of the draft the version
started from against its text; NULL for versions saved before this revision or started from no draft).
Columns are added in place (no table copy), so the append-only triggers of ``review_versions`` stay.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("studies", sa.Column("out_of_domain", sa.Boolean(), nullable=True))
    op.add_column("studies", sa.Column("domain", JSON, nullable=True))
    op.create_index("ix_studies_out_of_domain", "studies", ["out_of_domain"])
    for table in ("reviews", "review_versions"):
        op.add_column(table, sa.Column("corrections", JSON, nullable=True))


def downgrade() -> None:
    for table in ("review_versions", "reviews"):
        op.drop_column(table, "corrections")
    op.drop_index("ix_studies_out_of_domain", "studies")
    op.drop_column("studies", "domain")
    op.drop_column("studies", "out_of_domain")
