"""The fake servers themselves: admin API over HTTP, and platform rules a test may lean on."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from postwright.publishing.platforms.bluesky import new_tid
from postwright.testing.fakes import FakeBluesky, FakeX, RunningFake, create_fake_app


async def call(
    http: aiohttp.ClientSession, method: str, url: str, *, token: str | None = None, **kwargs: Any
) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url, headers=headers, **kwargs) as response:
        return response.status, await response.json(content_type=None), response.headers


class TestCreateFakeApp:
    def test_known_and_unknown_keys(self) -> None:
        assert isinstance(create_fake_app("x").state.fake, FakeX)
        assert isinstance(create_fake_app("BLUESKY").state.fake, FakeBluesky)
        with pytest.raises(KeyError):
            create_fake_app("MYSPACE")


class TestAdminApi:
    async def test_script_read_and_reset_over_http(
        self, http: aiohttp.ClientSession, x_server: RunningFake, x_fake: FakeX
    ) -> None:
        base = x_server.base_url
        status, account, _ = await call(
            http, "POST", f"{base}/_fake/accounts", json={"username": "zoe", "access_token": "tok-zoe"}
        )
        assert status == 200 and account["username"] == "zoe"
        status, queued, _ = await call(
            http, "POST", f"{base}/_fake/script", json={"account": "zoe", "kind": "429", "times": 2}
        )
        assert status == 200 and queued["queued"] == 2

        first = await call(http, "POST", f"{base}/2/tweets", token="tok-zoe", json={"text": "a"})
        second = await call(http, "POST", f"{base}/2/tweets", token="tok-zoe", json={"text": "a"})
        third = await call(http, "POST", f"{base}/2/tweets", token="tok-zoe", json={"text": "a"})

        assert [first[0], second[0], third[0]] == [429, 429, 201]
        assert first[2]["x-rate-limit-remaining"] == "0" and "retry-after" not in first[2]
        _, posts, _ = await call(http, "GET", f"{base}/_fake/posts")
        assert [p["text"] for p in posts["posts"]] == ["a"]
        _, requests, _ = await call(http, "GET", f"{base}/_fake/requests", params={"path": "/2/tweets"})
        assert [r["scripted"] for r in requests["requests"]] == ["rate_limited", "rate_limited", None]
        assert all("authorization" not in r["headers"] for r in requests["requests"])
        assert requests["requests"][0]["body"] == {"text": "a"}

        await call(http, "POST", f"{base}/_fake/reset", json={})
        _, posts, _ = await call(http, "GET", f"{base}/_fake/posts")
        assert posts["posts"] == []

    async def test_bad_scripts_are_refused(
        self, http: aiohttp.ClientSession, x_server: RunningFake, bluesky_server: RunningFake, bsky_fake: FakeBluesky
    ) -> None:
        unknown = await call(http, "POST", f"{x_server.base_url}/_fake/script", json={"kind": "meteor"})
        unsupported = await call(http, "POST", f"{bluesky_server.base_url}/_fake/script", json={"kind": "duplicate"})

        assert unknown[0] == 400 and "meteor" in unknown[1]["error"]
        assert unsupported[0] == 400

    async def test_knobs_error_rate_and_latency(
        self, http: aiohttp.ClientSession, x_server: RunningFake, x_fake: FakeX
    ) -> None:
        base = x_server.base_url
        await call(http, "POST", f"{base}/_fake/knobs", json={"error_rate": 1.0, "latency_ms": 50})

        started = time.monotonic()
        status, body, _ = await call(http, "POST", f"{base}/2/tweets", token="fake-knobs", json={"text": "k"})

        assert time.monotonic() - started >= 0.05
        assert status == 500 and body["title"] == "Internal Server Error"
        assert x_fake.posts() == []

    async def test_expire_token_and_clock(
        self, http: aiohttp.ClientSession, x_server: RunningFake, x_fake: FakeX
    ) -> None:
        base = x_server.base_url
        x_fake.register_account(username="eve", access_token="tok-eve", expires_in=60)

        ok = await call(http, "GET", f"{base}/2/users/me", token="tok-eve")
        await call(http, "POST", f"{base}/_fake/clock", json={"advance_seconds": 61})
        expired = await call(http, "GET", f"{base}/2/users/me", token="tok-eve")

        assert ok[0] == 200 and ok[1]["data"]["username"] == "eve"
        assert expired[0] == 401 and expired[1]["title"] == "Unauthorized"
        status, body, _ = await call(http, "POST", f"{base}/_fake/tokens/expire", json={"token": "nope"})
        assert status == 200 and body == {"expired": False}


class TestFakeX:
    async def test_timeline_validates_max_results(
        self, http: aiohttp.ClientSession, x_server: RunningFake, x_fake: FakeX
    ) -> None:
        account = x_fake.register_account(username="tim", access_token="tok-tim")
        url = f"{x_server.base_url}/2/users/{account.user_id}/tweets"

        status, body, _ = await call(http, "GET", url, token="tok-tim", params={"max_results": "3"})
        empty = await call(http, "GET", url, token="tok-tim", params={"max_results": "5"})

        assert status == 400 and body["title"] == "Invalid Request"
        assert empty[1] == {"meta": {"result_count": 0}}

    async def test_refresh_rotation_on_the_wire(
        self, http: aiohttp.ClientSession, x_server: RunningFake, x_fake: FakeX
    ) -> None:
        x_fake.register_account(username="rot", refresh_token="rt-1")
        url = f"{x_server.base_url}/2/oauth2/token"
        form = {"grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": "app"}

        first = await call(http, "POST", url, data=form)
        again = await call(http, "POST", url, data=form)
        no_client = await call(http, "POST", url, data={"grant_type": "refresh_token", "refresh_token": "x"})

        assert first[0] == 200 and first[1]["refresh_token"] != "rt-1" and first[1]["expires_in"] == 7200
        refused = {"error": "invalid_request", "error_description": "Value passed for the token was invalid."}
        assert again[0:2] == (400, refused)
        assert no_client[0] == 401


class TestFakeBluesky:
    async def _session(self, http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
        body = {"identifier": "alice.test", "password": "abcd-efgh-ijkl-mnop"}
        status, session, _ = await call(http, "POST", f"{base}/xrpc/com.atproto.server.createSession", json=body)
        assert status == 200 and isinstance(session, dict)
        return session

    def _write(self, did: str, rkey: str, text: str = "hi", **extra: Any) -> dict[str, Any]:
        record = {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2026-11-25T10:00:00.000Z", **extra}
        return {"repo": did, "collection": "app.bsky.feed.post", "rkey": rkey, "record": record}

    async def test_create_record_at_an_existing_key_is_a_bare_500(
        self, http: aiohttp.ClientSession, bluesky_server: RunningFake, bsky_fake: FakeBluesky
    ) -> None:
        base = bluesky_server.base_url
        session = await self._session(http, base)
        body, url = self._write(session["did"], new_tid()), f"{base}/xrpc/com.atproto.repo.createRecord"

        first = await call(http, "POST", url, token=session["accessJwt"], json=body)
        second = await call(http, "POST", url, token=session["accessJwt"], json=body)

        assert first[0] == 200 and first[1]["uri"].endswith(body["rkey"])
        assert second[0:2] == (500, {"error": "InternalServerError", "message": "Internal Server Error"})
        assert len(bsky_fake.posts()) == 1

    async def test_put_record_without_swap_overwrites(
        self, http: aiohttp.ClientSession, bluesky_server: RunningFake, bsky_fake: FakeBluesky
    ) -> None:
        base = bluesky_server.base_url
        session = await self._session(http, base)
        rkey, url = new_tid(), f"{base}/xrpc/com.atproto.repo.putRecord"

        await call(http, "POST", url, token=session["accessJwt"], json=self._write(session["did"], rkey, "one"))
        await call(http, "POST", url, token=session["accessJwt"], json=self._write(session["did"], rkey, "two"))

        assert [p.text for p in bsky_fake.posts()] == ["two"]

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            ({"facets": [{"index": {"byteStart": 0, "byteEnd": 99}, "features": []}]}, "outside the text"),
            ({"langs": ["en", "fr", "de", "it"]}, "array too big (maximum 3, got 4)"),
            ({"reply": {"root": {"uri": "at://x/y/z"}}}, "Record/reply/root"),
        ],
    )
    async def test_invalid_records_are_refused(
        self,
        http: aiohttp.ClientSession,
        bluesky_server: RunningFake,
        bsky_fake: FakeBluesky,
        extra: dict[str, Any],
        message: str,
    ) -> None:
        session = await self._session(http, bluesky_server.base_url)
        body = self._write(session["did"], new_tid(), **extra)

        url = f"{bluesky_server.base_url}/xrpc/com.atproto.repo.putRecord"
        status, error, _ = await call(http, "POST", url, token=session["accessJwt"], json=body)

        assert status == 400 and error["error"] == "InvalidRequest" and message in error["message"]

    async def test_auth_errors_and_sandbox_login(
        self, http: aiohttp.ClientSession, bluesky_server: RunningFake, bsky_fake: FakeBluesky
    ) -> None:
        base = bluesky_server.base_url
        url = f"{base}/xrpc/com.atproto.repo.putRecord"

        missing = await call(http, "POST", url, json={})
        bogus = await call(http, "POST", url, token="bogus", json={})
        body = {"identifier": "newbie.test", "password": "sandbox-pw"}
        sandbox = await call(http, "POST", f"{base}/xrpc/com.atproto.server.createSession", json=body)
        bsky_fake.advance(2 * 3600 + 1)
        expired = await call(http, "POST", url, token=sandbox[1]["accessJwt"], json={})
        unknown = await call(http, "GET", f"{base}/xrpc/app.bsky.feed.getTimeline")

        assert missing[0:2] == (401, {"error": "AuthenticationRequired", "message": "Authentication Required"})
        assert bogus[0] == 400 and bogus[1]["error"] == "InvalidToken"
        assert sandbox[0] == 200 and sandbox[1]["handle"] == "newbie.test"
        assert expired[0:2] == (400, {"error": "ExpiredToken", "message": "Token has expired"})
        assert unknown[0] == 501
