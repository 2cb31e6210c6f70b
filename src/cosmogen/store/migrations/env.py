"""Alembic environment: runs only through cosmogen.store.migrate, which hands over an open connection."""

from __future__ import annotations

from alembic import context

from cosmogen.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "cosmogen migrations run through cosmogen.store.migrate.upgrade(db) with a live connection; "
        "offline SQL generation and the bare alembic command line are not supported"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds the table instead, should a revision need it.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
