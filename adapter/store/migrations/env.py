"""Alembic environment: always online, on the connection the caller passed in."""

from alembic import context

from archive_oa.store.metadata import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "archive-oa migrations run through archive_oa.store.migrations.upgrade(engine) "
        "or `archive-oa db upgrade`, not the alembic command line"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying
)
with context.begin_transaction():
    context.run_migrations()
