"""Which adapter serves which platform, and how seed enum values map to adapter keys.

The seed's `Platform` enum distinguishes account flavours (LINKEDIN_PERSON / LINKEDIN_COMPANY, ...);
adapters exist once per network (shared/reference/platforms.md table). Unknown values raise KeyError so
a typo never silently picks a different network.
"""

from __future__ import annotations

from collections.abc import Callable

from postwright.publishing.platforms.base import AdapterContext, PlatformAdapter
from postwright.publishing.platforms.bluesky import BlueskyAdapter
from postwright.publishing.platforms.x import XAdapter

PLATFORM_KEYS: dict[str, str] = {
    "X": "X",
    "BLUESKY": "BLUESKY",
    "PINTEREST": "PINTEREST",
    "INSTAGRAM": "INSTAGRAM",
    "FACEBOOK_PAGE": "FACEBOOK",
    "THREADS": "THREADS",
    "LINKEDIN_PERSON": "LINKEDIN",
    "LINKEDIN_COMPANY": "LINKEDIN",
    "TIKTOK_PERSONAL": "TIKTOK",
    "TIKTOK_BUSINESS": "TIKTOK",
    "YOUTUBE": "YOUTUBE",
}

_ADAPTERS: dict[str, Callable[[AdapterContext], PlatformAdapter]] = {
    "X": XAdapter,
    "BLUESKY": BlueskyAdapter,
}


def platform_key_for(seed_enum_value: str) -> str:
    """Adapter key of a seed enum value (LINKEDIN_PERSON → LINKEDIN); KeyError when unknown."""
    return PLATFORM_KEYS[seed_enum_value]


def supported_platform_keys() -> frozenset[str]:
    """Adapter keys that have an adapter today."""
    return frozenset(_ADAPTERS)


def build_adapter(platform_key: str, ctx: AdapterContext) -> PlatformAdapter:
    """The adapter for an adapter key or seed enum value; KeyError when none exists."""
    key = PLATFORM_KEYS.get(platform_key, platform_key)
    return _ADAPTERS[key](ctx)
