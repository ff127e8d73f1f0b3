"""Threads: a post published as a chain, the root first and then each part as a reply to the one before.

The parts live in the target's `platformOptions.thread` as `[{"text": ..., "mediaIds": [...]}, ...]`; the
root is the target's own text and media. Once the root is PUBLISHED, `thread_state` holds one entry per
part, each moving PENDING → SENDING → DONE | FAILED exactly like a first comment (see followups.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Platforms whose adapters can chain replies with media (platforms.md §1.7 and §2.7).
THREAD_PLATFORMS = frozenset({"X", "BLUESKY"})
# X's composer allows 25 posts in a thread; the root is one of them.
MAX_THREAD_PARTS = 24
MAX_PART_MEDIA_IDS = 4


@dataclass(frozen=True)
class ThreadPart:
    text: str
    media_ids: list[str] = field(default_factory=list)


def parse_thread(platform: str, platform_options: dict[str, Any] | None) -> tuple[list[ThreadPart], list[str]]:
    """The thread parts of a target's options, and what is wrong with their shape (empty when fine)."""
    raw = (platform_options or {}).get("thread")
    if raw is None:
        return [], []
    if platform not in THREAD_PLATFORMS:
        return [], [f"threads are supported on {' and '.join(sorted(THREAD_PLATFORMS))}, not {platform}"]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_THREAD_PARTS:
        return [], [f"thread must be a list of 1 to {MAX_THREAD_PARTS} parts"]
    parts: list[ThreadPart] = []
    problems: list[str] = []
    for index, item in enumerate(raw, 1):
        if not isinstance(item, dict) or set(item) - {"text", "mediaIds"}:
            problems.append(f"thread part {index} must be an object with text and optional mediaIds")
            continue
        text, media_ids = item.get("text", ""), item.get("mediaIds") or []
        if not isinstance(text, str) or len(text) > 10_000:
            problems.append(f"thread part {index}: text must be a string of at most 10000 characters")
            continue
        if (
            not isinstance(media_ids, list)
            or len(media_ids) > MAX_PART_MEDIA_IDS
            or not all(isinstance(m, str) and 0 < len(m) <= 64 for m in media_ids)
        ):
            problems.append(f"thread part {index}: mediaIds must be a list of at most {MAX_PART_MEDIA_IDS} media ids")
            continue
        if not text.strip() and not media_ids:
            problems.append(f"thread part {index} needs text or media")
            continue
        parts.append(ThreadPart(text=text, media_ids=list(media_ids)))
    return parts, problems


def thread_media_ids(platform_options: dict[str, Any] | None) -> list[str]:
    """Every media id the thread parts use (shape errors ignored: they are reported elsewhere)."""
    raw = (platform_options or {}).get("thread")
    if not isinstance(raw, list):
        return []
    ids = [m for item in raw if isinstance(item, dict) for m in item.get("mediaIds") or [] if isinstance(m, str)]
    return list(dict.fromkeys(ids))


def new_thread_state(parts: list[ThreadPart]) -> list[dict[str, Any]]:
    return [{"state": "PENDING", "attempts": 0} for _ in parts]


def thread_error(state: list[dict[str, Any]] | None) -> str | None:
    """The error that halted the thread, if it is halted."""
    for index, entry in enumerate(state or [], 1):
        if entry.get("state") == "FAILED":
            return f"Thread part {index}: {entry.get('error') or 'failed'}"
    return None


def render_thread(
    platform_options: dict[str, Any] | None, state: list[dict[str, Any]] | None
) -> list[dict[str, Any]] | None:
    """The `thread` field of a target in API responses: each part with its delivery state."""
    raw = (platform_options or {}).get("thread")
    if not isinstance(raw, list):
        return None
    state = state or []
    rendered = []
    for index, item in enumerate(raw):
        entry = state[index] if index < len(state) else {}
        rendered.append(
            {
                "position": index + 1,
                "text": item.get("text") if isinstance(item, dict) else None,
                "status": entry.get("state") or "WAITING",
                "externalPostId": entry.get("externalPostId"),
                "externalUrl": entry.get("externalUrl"),
                "error": entry.get("error"),
                "attemptCount": entry.get("attempts", 0),
            }
        )
    return rendered
