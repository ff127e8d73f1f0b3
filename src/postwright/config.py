"""Settings: one object, read from the environment (prefix POSTWRIGHT_, plus DATABASE_URL)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSTWRIGHT_", extra="ignore", populate_by_name=True)

    env: str = "development"  # "production" refuses test-only switches
    host: str = "127.0.0.1"
    port: int = 4100
    data_dir: Path = Field(default_factory=lambda: Path(os.getcwd()) / ".postwright")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "POSTWRIGHT_DATABASE_URL")
    )
    public_url: str | None = None
    # Comma-separated Fernet keys; the first encrypts, all decrypt (rotation).
    secret_key: str | None = None
    log_level: str = "INFO"
    max_body_bytes: int = 1_048_576
    db_pool_size: int = 10
    worker_concurrency: int = 32
    publish_max_attempts: int = 5
    first_comment_cooldown_seconds: int = 60
    idempotency_ttl_hours: int = 24

    @property
    def base_public_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
