"""Seed enum values → adapter keys → adapters."""

from __future__ import annotations

import aiohttp
import pytest

from postwright.publishing.platforms.base import AdapterContext
from postwright.publishing.platforms.bluesky import BlueskyAdapter
from postwright.publishing.platforms.registry import build_adapter, platform_key_for, supported_platform_keys
from postwright.publishing.platforms.x import XAdapter


@pytest.mark.parametrize(
    ("seed", "key"),
    [
        ("X", "X"),
        ("BLUESKY", "BLUESKY"),
        ("LINKEDIN_PERSON", "LINKEDIN"),
        ("LINKEDIN_COMPANY", "LINKEDIN"),
        ("FACEBOOK_PAGE", "FACEBOOK"),
        ("TIKTOK_PERSONAL", "TIKTOK"),
        ("TIKTOK_BUSINESS", "TIKTOK"),
    ],
)
def test_platform_key_for(seed: str, key: str) -> None:
    assert platform_key_for(seed) == key


def test_unknown_seed_value_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        platform_key_for("MYSPACE")


async def test_build_adapter(http: aiohttp.ClientSession) -> None:
    ctx = AdapterContext(http=http, base_url="http://127.0.0.1:9")

    x_adapter = build_adapter("X", ctx)
    bluesky_adapter = build_adapter("BLUESKY", ctx)

    assert isinstance(x_adapter, XAdapter) and x_adapter.api == "http://127.0.0.1:9"
    assert isinstance(bluesky_adapter, BlueskyAdapter)
    assert supported_platform_keys() == {"X", "BLUESKY"}
    with pytest.raises(KeyError):
        build_adapter("LINKEDIN_PERSON", ctx)  # known platform, no adapter yet
    with pytest.raises(KeyError):
        build_adapter("MYSPACE", ctx)
