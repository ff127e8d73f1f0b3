"""Settings: one object, read from the environment (prefix POSTWRIGHT_, plus DATABASE_URL)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
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
    # A claimed target whose worker vanished is reconciled after this long; keep it well above the
    # platform timeout so a slow but live publish is never taken over.
    publish_lease_seconds: float = 90.0
    platform_timeout_seconds: float = 30.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    sweep_interval_seconds: float = 1.0
    # Per-platform base URL overrides (every host of that platform; paths kept), e.g. a fake server.
    platform_x_base_url: str | None = None
    platform_linkedin_base_url: str | None = None
    platform_instagram_base_url: str | None = None
    platform_facebook_base_url: str | None = None
    platform_threads_base_url: str | None = None
    platform_tiktok_base_url: str | None = None
    platform_youtube_base_url: str | None = None
    platform_pinterest_base_url: str | None = None
    x_client_id: str | None = None
    x_client_secret: str | None = None
    first_comment_cooldown_seconds: int = 60
    idempotency_ttl_hours: int = 24

    # Media storage: "local" (files under data_dir/media) or "s3" (any S3-compatible store).
    storage: str = "local"
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    media_url_ttl_seconds: int = 3600
    media_fetch_timeout_seconds: float = 60.0
    # Test-only: lets POST /media/from-url fetch plain http:// from loopback. Refused in production.
    media_allow_loopback_http: bool = False

    @model_validator(mode="after")
    def _refuse_test_switches_in_production(self) -> Settings:
        if self.env == "production" and self.media_allow_loopback_http:
            raise ValueError("POSTWRIGHT_MEDIA_ALLOW_LOOPBACK_HTTP is a test-only switch; it is refused in production")
        if self.storage not in ("local", "s3"):
            raise ValueError("POSTWRIGHT_STORAGE must be 'local' or 's3'")
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("POSTWRIGHT_STORAGE=s3 needs POSTWRIGHT_S3_BUCKET")
        return self

    def platform_base_url(self, key: str) -> str | None:
        return getattr(self, f"platform_{key.lower()}_base_url", None)

    def platform_client(self, key: str) -> tuple[str | None, str | None]:
        return getattr(self, f"{key.lower()}_client_id", None), getattr(self, f"{key.lower()}_client_secret", None)

    @property
    def base_public_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
