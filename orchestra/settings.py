"""Settings, read from ``ORCHESTRA_*`` environment variables by pydantic-settings."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything Orchestra reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRA_", extra="ignore")

    redis_url: str | None = Field(
        default=None, description="Broker, result backend and wait state. Unset: an embedded Redis is started."
    )
    database_url: str | None = Field(default=None, description="Results database. Unset: SQLite under var/.")
    config_dir: Path = Path("config")
    var_dir: Path = Path("var")

    # Step runtime.
    lease_seconds: float = Field(default=15.0, description="How long a running step's lease lasts between heartbeats.")
    heartbeat_seconds: float = Field(default=5.0, description="How often a worker renews the leases it holds.")
    sweep_seconds: float = Field(default=2.0, description="How often the sweeper looks for lapsed leases and due waits.")
    stall_seconds: float = Field(default=30.0, description="A running run with no progress for this long is re-dispatched.")
    visibility_timeout: int = Field(default=3600, description="Redis broker visibility timeout, in seconds.")
    segment_size: int = Field(default=16, description="Steps compiled into one canvas segment.")
    max_recoveries: int = Field(default=3, ge=1, description="Lease lapses (its worker died) after which a step is abandoned.")
    max_for_each_items: int = Field(default=5000, description="The most items one for_each may fan out to.")

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    max_body_bytes: int = 1_000_000
    secret_key: str | None = Field(default=None, description="Signs inbox links and UI cookies. Unset: kept in var/.")
    public_url: str = "http://127.0.0.1:8000"

    @property
    def workflows_dir(self) -> Path:
        return self.config_dir / "workflows"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.var_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.var_dir / 'orchestra.db').resolve()}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
