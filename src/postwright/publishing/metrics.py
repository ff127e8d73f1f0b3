"""Prometheus metrics of the publishing engine (served by GET /metrics of the process that runs it)."""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Histogram

TARGET_OUTCOMES = Counter(
    "postwright_target_outcomes_total", "Recorded publish outcomes per target.", ["platform", "outcome"]
)
PUBLISH_LAG = Histogram(
    "postwright_publish_lag_seconds",
    "Time from a target's due time to its request leaving.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)


@cache
def outcome_counter(platform: str, outcome: str) -> Counter:
    """The labelled child, looked up once: `labels()` costs a lock and tuple work on every call of a burst."""
    return TARGET_OUTCOMES.labels(platform, outcome)
