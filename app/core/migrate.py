"""Apply Alembic migrations on start (API, worker and CLI all call this)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from app.core.private_files import private_sqlite_file, sqlite_file

MIGRATIONS_DIR = Path(migrations.__file__).parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str) -> None:
    """Upgrade to the latest migration. A SQLite file is created 0600 first (its -wal and -shm follow),
    and when it lives in the configured data directory, that directory is made owner-only too."""
    from app.core.config import get_settings

    database = sqlite_file(url)
    if database is not None:
        settings = get_settings()
        if database.parent == settings.data_dir:
            settings.ensure_dirs()
        private_sqlite_file(database)
    command.upgrade(alembic_config(url), "head")
    if database is not None:
        private_sqlite_file(database)  # the -wal and -shm the migration opened


def migrate_data_dir() -> None:
    """The current settings' data directories exist (owner-only: 0700, SQLite files 0600) and their
    database is at the latest migration."""
    from app.core.config import get_settings

    settings = get_settings()
    settings.ensure_dirs()
    upgrade_database(settings.sqlalchemy_url)
