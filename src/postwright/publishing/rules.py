"""Per-platform content rules, checked when a post is scheduled, published or approved (not on drafts).

Each platform registers one validator; adapters may replace the defaults with their own finer rules via
`register_validator`. A validator returns human-readable problems; an empty list means publishable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PLATFORMS = (
    "INSTAGRAM",
    "FACEBOOK_PAGE",
    "X",
    "LINKEDIN_PERSON",
    "LINKEDIN_COMPANY",
    "TIKTOK_BUSINESS",
    "TIKTOK_PERSONAL",
    "YOUTUBE",
    "PINTEREST",
    "THREADS",
    "BLUESKY",
)


@dataclass(frozen=True)
class MediaFacts:
    id: str
    kind: str
    mime_type: str
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None


@dataclass(frozen=True)
class TargetContent:
    platform: str
    text: str
    first_comment: str | None
    media: list[MediaFacts] = field(default_factory=list)
    platform_options: dict[str, Any] = field(default_factory=dict)


Validator = Callable[[TargetContent], list[str]]


@dataclass(frozen=True)
class BasicRule:
    max_chars: int
    max_media: int
    media_required: bool = False
    allowed_kinds: frozenset[str] = frozenset({"IMAGE", "VIDEO", "GIF"})
    video_only: bool = False


# Conservative defaults from shared/reference/platforms/*; the adapters refine them.
BASIC_RULES: dict[str, BasicRule] = {
    "X": BasicRule(max_chars=280, max_media=4),
    "BLUESKY": BasicRule(max_chars=300, max_media=4),
    "THREADS": BasicRule(max_chars=500, max_media=20),
    "INSTAGRAM": BasicRule(max_chars=2200, max_media=10, media_required=True),
    "FACEBOOK_PAGE": BasicRule(max_chars=63206, max_media=10),
    "LINKEDIN_PERSON": BasicRule(
        max_chars=3000, max_media=20, allowed_kinds=frozenset({"IMAGE", "VIDEO", "GIF", "DOCUMENT"})
    ),
    "LINKEDIN_COMPANY": BasicRule(
        max_chars=3000, max_media=20, allowed_kinds=frozenset({"IMAGE", "VIDEO", "GIF", "DOCUMENT"})
    ),
    "TIKTOK_BUSINESS": BasicRule(max_chars=2200, max_media=35, media_required=True),
    "TIKTOK_PERSONAL": BasicRule(max_chars=2200, max_media=35, media_required=True),
    "YOUTUBE": BasicRule(
        max_chars=5000, max_media=1, media_required=True, allowed_kinds=frozenset({"VIDEO"}), video_only=True
    ),
    "PINTEREST": BasicRule(max_chars=500, max_media=5, media_required=True),
}


def _basic_validator(rule: BasicRule) -> Validator:
    def validate(content: TargetContent) -> list[str]:
        problems = []
        if len(content.text) > rule.max_chars:
            problems.append(
                f"{content.platform} allows {rule.max_chars} characters; this text has {len(content.text)}."
            )
        if not content.text.strip() and not content.media:
            problems.append(f"{content.platform} needs text or media.")
        if rule.media_required and not content.media:
            problems.append(f"{content.platform} needs at least one media item.")
        if len(content.media) > rule.max_media:
            problems.append(f"{content.platform} allows at most {rule.max_media} media items.")
        for item in content.media:
            if item.kind not in rule.allowed_kinds:
                problems.append(f"{content.platform} does not accept {item.kind} media ({item.id}).")
        return problems

    return validate


_VALIDATORS: dict[str, Validator] = {name: _basic_validator(rule) for name, rule in BASIC_RULES.items()}


def register_validator(platform: str, validator: Validator) -> None:
    _VALIDATORS[platform] = validator


def validate_content(content: TargetContent) -> list[str]:
    validator = _VALIDATORS.get(content.platform)
    return validator(content) if validator else []
