"""Per-platform content rules, checked when a post is scheduled, published or approved (not on drafts).

Each platform registers one validator; adapters may replace the defaults with their own finer rules via
`register_validator`. A validator returns human-readable problems; an empty list means publishable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from postwright.publishing.threads import parse_thread

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
    # The thread's follow-up parts (text and media each), checked by the same rules as the root.
    thread: list[tuple[str, list[MediaFacts]]] = field(default_factory=list)


Validator = Callable[[TargetContent], list[str]]


def facts_of(asset: Any) -> MediaFacts:
    """The figures rules look at, from a MediaAsset row."""
    return MediaFacts(
        id=asset.id,
        kind=asset.kind,
        mime_type=asset.mime_type,
        size_bytes=asset.size_bytes,
        width=asset.width,
        height=asset.height,
        duration_ms=asset.duration_ms,
    )


def content_of(
    *,
    platform: str,
    text: str,
    first_comment: str | None,
    platform_options: dict[str, Any] | None,
    media_ids: list[str],
    facts: dict[str, MediaFacts],
) -> TargetContent:
    """What the rules check for one target: root text and media, and each thread part with its media."""
    parts, _ = parse_thread(platform, platform_options)
    return TargetContent(
        platform=platform,
        text=text,
        first_comment=first_comment,
        media=[facts[m] for m in media_ids if m in facts],
        platform_options=platform_options or {},
        thread=[(part.text, [facts[m] for m in part.media_ids if m in facts]) for part in parts],
    )


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
    if validator is None:
        return []
    problems = validator(content)
    for index, (text, media) in enumerate(content.thread, 1):
        part = TargetContent(
            platform=content.platform,
            text=text,
            first_comment=None,
            media=media,
            platform_options={k: v for k, v in content.platform_options.items() if k != "thread"},
        )
        problems += [f"Thread part {index}: {problem}" for problem in validator(part)]
    return problems


def _adapter_validator(basic: Validator, validate_post: Callable[[Any], list[str]]) -> Validator:
    """The adapter's own rules (length as the platform counts it, media sizes and durations)."""
    from postwright.publishing.platforms.base import MediaFile, OutboundPost

    def validate(content: TargetContent) -> list[str]:
        media = tuple(
            MediaFile(
                kind=m.kind,
                mime_type=m.mime_type,
                width=m.width,
                height=m.height,
                duration_ms=m.duration_ms,
                size_bytes=m.size_bytes,
            )
            for m in content.media
        )
        post = OutboundPost(
            target_id="", text=content.text, account_handle="", media=media, platform_options=content.platform_options
        )
        # The adapter counts length its platform's way; the basic rule's plain count would be wrong for X.
        problems = [p for p in basic(content) if "characters" not in p] + validate_post(post)
        return list(dict.fromkeys(problems))

    return validate


def _register_adapter_rules() -> None:
    from postwright.publishing.platforms import bluesky, x

    register_validator("X", _adapter_validator(_VALIDATORS["X"], x.validate_post))
    register_validator("BLUESKY", _adapter_validator(_VALIDATORS["BLUESKY"], bluesky.validate_post))


_register_adapter_rules()
