"""The worker's QueueManager subclass relies on pgqueuer internals: fail loudly if an upgrade moves them."""

from __future__ import annotations

import inspect

from pgqueuer import QueueManager

from postwright.publishing.worker import _QueueManager


def test_pgqueuer_still_has_the_hooks_the_worker_overrides():
    for name in ("_effective_dequeue_timeout", "forget_job"):
        assert callable(getattr(QueueManager, name, None)), f"pgqueuer no longer has QueueManager.{name}"
    assert inspect.iscoroutinefunction(QueueManager._effective_dequeue_timeout)
    fields = getattr(QueueManager, "__dataclass_fields__", {})
    assert "job_context" in fields or "job_context" in vars(QueueManager), "pgqueuer renamed job_context"
    assert issubclass(_QueueManager, QueueManager)
