"""Retry policy: exponential backoff with jitter, bounded attempts; pure and unit-tested."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_seconds: float = 2.0
    max_seconds: float = 300.0

    def next_delay(
        self, attempt: int, *, retry_after: timedelta | None = None, rng: random.Random | None = None
    ) -> timedelta | None:
        """Delay before try `attempt + 1`, or None when the attempts are used up.

        Full jitter in [0.5, 1.5) of the exponential step keeps a burst of failures from retrying in
        lockstep; a platform's Retry-After is a floor, never shortened.
        """
        if attempt >= self.max_attempts:
            return None
        step = min(self.max_seconds, self.base_seconds * (2 ** max(0, attempt - 1)))
        jittered = step * (0.5 + (rng or random).random())
        seconds = max(jittered, retry_after.total_seconds() if retry_after else 0.0)
        return timedelta(seconds=seconds)
