"""Alembic migrations for the results database. Apply with ``orchestra db upgrade``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from orchestra import db

HERE = Path(__file__).parent


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("sqlalchemy.url", db.engine().url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def upgrade(revision: str = "head") -> None:
    """Bring the results database up to ``revision``."""
    cfg = alembic_config()
    with db.engine().connect() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
