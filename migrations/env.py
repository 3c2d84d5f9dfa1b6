"""Alembic environment: the URL comes from the caller (app.core.migrate) or from Settings.

Online upgrades run under the migration lock (app.core.migration_lock: a file lock beside a SQLite
file, an advisory lock on PostgreSQL), so processes starting at once migrate one after another and
the later ones, reading the revision under the lock, find the database at head.
"""

from __future__ import annotations

from alembic import context

from app.core.config import get_settings
from app.core.migration_lock import connection_migration_lock, migration_connection
from app.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    url = config.get_main_option("sqlalchemy.url") or get_settings().sqlalchemy_url
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    timeout = config.attributes.get("migration_lock_timeout")  # seconds; None: the module's default
    if connection is None:
        url = config.get_main_option("sqlalchemy.url") or get_settings().sqlalchemy_url
        with migration_connection(url, timeout) as conn:
            _run(conn)
    else:
        with connection_migration_lock(connection, timeout):
            _run(connection)


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
