"""Alembic environment of the review store: runs on the connection that rrg_core.store.database hands in.

There is no alembic.ini: :func:`rrg_core.store.database.alembic_config` builds the configuration in
code and puts an open connection (already inside the migration transaction) in its attributes.
"""

from __future__ import annotations

from alembic import context

from rrg_core.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the store's migrations through rrg_core.store (python -m rrg_core.store upgrade)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
