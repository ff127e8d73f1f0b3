"""BlueskyAdapter against the fake PDS on a loopback port."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from postwright.publishing.platforms.base import (
    AdapterContext,
    Credentials,
    MediaFile,
    OutboundPost,
    OutcomeUnknown,
    PermanentError,
    ReauthRequired,
    RetryableError,
)
from postwright.publishing.platforms.bluesky import (
    BlueskyAdapter,
    created_at_for,
    verify_login,
)
from postwright.testing.fakes import FakeBluesky, RunningFake

HANDLE, PASSWORD = "alice.test", "abcd-efgh-ijkl-mnop"  # conftest registers this account


def make_post(adapter: BlueskyAdapter, text: str = "Hello from postwright", **fields: Any) -> OutboundPost:
    """A post whose record key was prepared and stored before sending, as the engine does."""
    post = OutboundPost(target_id="tgt-1", text=text, account_handle=HANDLE, **fields)
    return replace(post, idempotency_key=adapter.prepare(post))


def jpeg(size: int = 300, alt: str | None = None) -> MediaFile:
    data = b"\xff\xd8" + b"j" * size
    return MediaFile(kind="IMAGE", mime_type="image/jpeg", data=data, alt_text=alt, width=4, height=3)


def put_bodies(fake: FakeBluesky) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests(op="com.atproto.repo.putRecord")]


class TestPublish:
    async def test_text_post_is_put_at_the_prepared_key_with_null_swap(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        post = make_post(bsky_adapter)

        result = await bsky_adapter.publish(bsky_creds, post)

        [body] = put_bodies(bsky_fake)
        did = bsky_creds.extra["did"]
        assert body["repo"] == did
        assert body["collection"] == "app.bsky.feed.post"
        assert body["rkey"] == post.idempotency_key
        assert "swapRecord" in body and body["swapRecord"] is None
        assert body["record"]["text"] == "Hello from postwright"
        assert body["record"]["createdAt"] == created_at_for(post.idempotency_key or "")
        assert result.external_post_id == f"at://{did}/app.bsky.feed.post/{post.idempotency_key}"
        assert result.external_url == f"https://bsky.app/profile/{HANDLE}/post/{post.idempotency_key}"
        assert [p.id for p in bsky_fake.posts()] == [result.external_post_id]

    async def test_resending_the_identical_record_is_a_no_op(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        post = make_post(bsky_adapter)

        first = await bsky_adapter.publish(bsky_creds, post)
        second = await bsky_adapter.publish(bsky_creds, post)

        assert first == second
        assert len(bsky_fake.posts()) == 1
        assert [r.status for r in bsky_fake.requests(op="com.atproto.repo.putRecord")] == [200, 200]

    async def test_other_content_at_the_same_key_resolves_to_the_existing_post(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        post = make_post(bsky_adapter)
        first = await bsky_adapter.publish(bsky_creds, post)

        again = await bsky_adapter.publish(bsky_creds, replace(post, text="edited meanwhile"))

        assert again == first
        [stored] = bsky_fake.posts()
        assert stored.text == "Hello from postwright"
        assert bsky_fake.requests(op="com.atproto.repo.putRecord")[-1].status == 400

    async def test_images_are_uploaded_as_blobs_and_embedded(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        post = make_post(bsky_adapter, media=(jpeg(alt="a cat"), jpeg(size=500)))

        await bsky_adapter.publish(bsky_creds, post)

        uploads = bsky_fake.requests(op="com.atproto.repo.uploadBlob")
        assert [u.headers["content-type"] for u in uploads] == ["image/jpeg", "image/jpeg"]
        assert [u.body["bytes"] for u in uploads] == [302, 502]
        embed = put_bodies(bsky_fake)[0]["record"]["embed"]
        assert embed["$type"] == "app.bsky.embed.images"
        assert [i["alt"] for i in embed["images"]] == ["a cat", ""]
        assert embed["images"][0]["aspectRatio"] == {"width": 4, "height": 3}
        assert [i["image"]["ref"]["$link"] for i in embed["images"]] == list(bsky_fake.blobs)

    async def test_video_is_embedded_as_a_video(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        clip = MediaFile(kind="VIDEO", mime_type="video/mp4", data=b"\x00" * 1000, alt_text="clip")

        await bsky_adapter.publish(bsky_creds, make_post(bsky_adapter, media=(clip,)))

        embed = put_bodies(bsky_fake)[0]["record"]["embed"]
        assert embed["$type"] == "app.bsky.embed.video"
        assert embed["video"]["mimeType"] == "video/mp4"
        assert embed["alt"] == "clip"

    async def test_facets_use_utf8_byte_offsets(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        bsky_fake.register_handle("carol.example.com", "did:plc:carol")
        text = "Grüße 👋🏽 @carol.example.com → https://exämple.com/ü?x=(1). #café! @nobody.test 日本 #2024"

        await bsky_adapter.publish(bsky_creds, make_post(bsky_adapter, text))

        record = put_bodies(bsky_fake)[0]["record"]
        raw = text.encode("utf-8")
        spans = [
            (raw[f["index"]["byteStart"] : f["index"]["byteEnd"]].decode(), f["features"][0]) for f in record["facets"]
        ]
        assert spans == [
            ("@carol.example.com", {"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:carol"}),
            (
                "https://exämple.com/ü?x=(1)",
                {"$type": "app.bsky.richtext.facet#link", "uri": "https://exämple.com/ü?x=(1)"},
            ),
            ("#café", {"$type": "app.bsky.richtext.facet#tag", "tag": "café"}),
        ]
        assert record["facets"][0]["index"] == {"byteStart": 17, "byteEnd": 35}

    async def test_publish_without_a_prepared_key_is_a_programming_error(
        self, bsky_adapter: BlueskyAdapter, bsky_creds: Credentials
    ) -> None:
        with pytest.raises(ValueError):
            await bsky_adapter.publish(bsky_creds, OutboundPost(target_id="t", text="x", account_handle=HANDLE))


class TestReply:
    async def test_replies_carry_root_and_parent_refs(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        root = await bsky_adapter.publish(bsky_creds, make_post(bsky_adapter, "root"))
        first = await bsky_adapter.reply(
            bsky_creds, make_post(bsky_adapter, "first comment", reply_to_external_id=root.external_post_id)
        )
        second = make_post(bsky_adapter, "second", reply_to_external_id=first.external_post_id)
        await bsky_adapter.reply(bsky_creds, second)

        root_ref = {"uri": root.external_post_id, "cid": _cid_of(bsky_fake, root.external_post_id)}
        first_ref = {"uri": first.external_post_id, "cid": _cid_of(bsky_fake, first.external_post_id)}
        replies = [b["record"]["reply"] for b in put_bodies(bsky_fake)[1:]]
        assert replies == [{"root": root_ref, "parent": root_ref}, {"root": root_ref, "parent": first_ref}]

    async def test_reply_to_a_missing_post_is_content_rejected(
        self, bsky_adapter: BlueskyAdapter, bsky_creds: Credentials
    ) -> None:
        missing = f"at://{bsky_creds.extra['did']}/app.bsky.feed.post/3kaaaaaaaaaaa"

        with pytest.raises(PermanentError) as caught:
            await bsky_adapter.reply(bsky_creds, make_post(bsky_adapter, reply_to_external_id=missing))

        assert caught.value.error_code == "CONTENT_REJECTED"


def _cid_of(fake: FakeBluesky, uri: str) -> str:
    return next(r.cid for r in fake.records.values() if r.uri == uri)


class TestFailures:
    async def test_429_with_retry_after_is_rate_limited_retryable(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        bsky_fake.push_failure("rate_limited", account=HANDLE, retry_after=30, with_retry_after=True)

        with pytest.raises(RetryableError) as caught:
            await bsky_adapter.publish(bsky_creds, make_post(bsky_adapter))

        assert caught.value.rate_limited
        assert caught.value.retry_after == timedelta(seconds=30)
        assert bsky_fake.posts() == []

    async def test_429_without_retry_after_waits_for_ratelimit_reset(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        bsky_fake.push_failure("rate_limited", retry_after=120)

        with pytest.raises(RetryableError) as caught:
            await bsky_adapter.publish(bsky_creds, make_post(bsky_adapter))

        assert caught.value.retry_after is not None
        assert timedelta(seconds=100) < caught.value.retry_after <= timedelta(seconds=121)

    async def test_500_on_create_is_outcome_unknown_and_lookup_says_absent(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        post = make_post(bsky_adapter)
        bsky_fake.push_failure("server_error")

        with pytest.raises(OutcomeUnknown):
            await bsky_adapter.publish(bsky_creds, post)

        assert await bsky_adapter.lookup(bsky_creds, post) is None

    async def test_500_on_blob_upload_is_retryable(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        bsky_fake.push_failure("server_error", op="com.atproto.repo.uploadBlob", status=503)

        with pytest.raises(RetryableError):
            await bsky_adapter.publish(bsky_creds, make_post(bsky_adapter, media=(jpeg(),)))

    async def test_expired_token_answer_is_reauth_required(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        bsky_fake.expire_token(bsky_creds.access_token or "")

        with pytest.raises(ReauthRequired):
            await bsky_adapter.publish(bsky_creds, make_post(bsky_adapter))

        assert bsky_fake.requests(op="com.atproto.repo.putRecord")[0].status == 400

    async def test_scripted_401_is_reauth_required(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        bsky_fake.push_failure("unauthorized", account=bsky_creds.extra["did"])

        with pytest.raises(ReauthRequired):
            await bsky_adapter.publish(bsky_creds, make_post(bsky_adapter))

    async def test_locally_expired_session_is_renewed_before_sending(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        claims = base64.urlsafe_b64encode(json.dumps({"exp": 1_000_000}).encode()).decode().rstrip("=")
        stale = replace(bsky_creds, access_token=f"e30.{claims}.sig")

        with pytest.raises(ReauthRequired):
            await bsky_adapter.publish(stale, make_post(bsky_adapter))

        assert bsky_fake.requests() == []

    async def test_media_refused_by_the_pds_is_media_rejected(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        bsky_fake.image_max_bytes = 100
        try:
            with pytest.raises(PermanentError) as caught:
                await bsky_adapter.publish(bsky_creds, make_post(bsky_adapter, media=(jpeg(size=200),)))
        finally:
            bsky_fake.image_max_bytes = 1_000_000

        assert caught.value.error_code == "MEDIA_REJECTED"
        assert "blob too big" in caught.value.message

    async def test_scripted_media_refusal_is_media_rejected(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        bsky_fake.push_failure("media_rejected")

        with pytest.raises(PermanentError) as caught:
            await bsky_adapter.publish(bsky_creds, make_post(bsky_adapter, media=(jpeg(),)))

        assert caught.value.error_code == "MEDIA_REJECTED"

    async def test_too_many_graphemes_is_content_rejected(
        self, bsky_adapter: BlueskyAdapter, bsky_creds: Credentials
    ) -> None:
        with pytest.raises(PermanentError) as caught:
            await bsky_adapter.publish(bsky_creds, make_post(bsky_adapter, "é" * 301))

        assert caught.value.error_code == "CONTENT_REJECTED"
        assert "grapheme too big (maximum 300, got 301)" in caught.value.message

    async def test_unreachable_pds_is_retryable(
        self, bsky_adapter: BlueskyAdapter, bsky_creds: Credentials, closed_port_url: str
    ) -> None:
        elsewhere = replace(bsky_creds, extra={**bsky_creds.extra, "pdsUrl": closed_port_url})

        with pytest.raises(RetryableError):
            await bsky_adapter.publish(elsewhere, make_post(bsky_adapter))

    async def test_lost_answer_is_outcome_unknown_then_lookup_finds_it_and_resend_is_safe(
        self, bsky_ctx: AdapterContext, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        adapter = BlueskyAdapter(replace(bsky_ctx, timeout_seconds=0.3))
        post = make_post(adapter)
        bsky_fake.push_failure("answer_lost")

        with pytest.raises(OutcomeUnknown):
            await adapter.publish(bsky_creds, post)
        found = await adapter.lookup(bsky_creds, post)
        resent = await adapter.publish(bsky_creds, post)

        [stored] = bsky_fake.posts()
        assert found is not None and found.external_post_id == stored.id
        assert resent == found

    async def test_dropped_connection_is_outcome_unknown(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        bsky_fake.push_failure("answer_lost", mode="drop")

        with pytest.raises(OutcomeUnknown):
            await bsky_adapter.publish(bsky_creds, make_post(bsky_adapter))

        assert len(bsky_fake.posts()) == 1


class TestLookup:
    async def test_returns_none_for_a_key_never_written(
        self, bsky_adapter: BlueskyAdapter, bsky_creds: Credentials
    ) -> None:
        assert await bsky_adapter.lookup(bsky_creds, make_post(bsky_adapter)) is None

    async def test_server_error_means_it_cannot_tell(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        bsky_fake.push_failure("server_error", op="com.atproto.repo.getRecord")

        with pytest.raises(OutcomeUnknown):
            await bsky_adapter.lookup(bsky_creds, make_post(bsky_adapter))

    async def test_without_a_stored_key_it_cannot_tell(
        self, bsky_adapter: BlueskyAdapter, bsky_creds: Credentials
    ) -> None:
        with pytest.raises(OutcomeUnknown):
            await bsky_adapter.lookup(bsky_creds, OutboundPost(target_id="t", text="x", account_handle=HANDLE))


class TestRefresh:
    async def test_rotation_with_grace_then_login_fallback(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        fresh = await bsky_adapter.refresh(bsky_creds)
        retried = await bsky_adapter.refresh(bsky_creds)  # old token inside the 2-hour grace window

        assert fresh.refresh_token not in (None, bsky_creds.refresh_token)
        assert retried.refresh_token == fresh.refresh_token
        assert fresh.extra["appPassword"] == PASSWORD
        assert await bsky_adapter.publish(fresh, make_post(bsky_adapter))

        bsky_fake.advance(2 * 3600 + 1)
        relogged = await bsky_adapter.refresh(bsky_creds)  # old refresh token now refused

        refreshes = bsky_fake.requests(op="com.atproto.server.refreshSession")
        assert [r.status for r in refreshes] == [200, 200, 400]
        assert len(bsky_fake.requests(op="com.atproto.server.createSession")) == 1
        assert relogged.refresh_token not in (fresh.refresh_token, bsky_creds.refresh_token)

    async def test_revoked_app_password_is_auth_expired(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bsky_creds: Credentials
    ) -> None:
        bsky_fake.expire_token(bsky_creds.refresh_token or "")
        bsky_fake.revoke_app_passwords(HANDLE)

        with pytest.raises(PermanentError) as caught:
            await bsky_adapter.refresh(bsky_creds)

        assert caught.value.error_code == "AUTH_EXPIRED"

    async def test_without_a_session_it_logs_in(
        self, bsky_adapter: BlueskyAdapter, bsky_fake: FakeBluesky, bluesky_server: RunningFake
    ) -> None:
        bare = Credentials(extra={"handle": HANDLE, "appPassword": PASSWORD, "serviceUrl": bluesky_server.base_url})

        with pytest.raises(ReauthRequired):
            await bsky_adapter.publish(bare, make_post(bsky_adapter))
        creds = await bsky_adapter.refresh(bare)

        assert creds.extra["did"].startswith("did:plc:")
        assert creds.extra["pdsUrl"] == bluesky_server.base_url
        assert creds.expires_at is not None and creds.expires_at > datetime.now(UTC)


class TestVerifyLogin:
    async def test_returns_identity_profile_and_session(
        self, bsky_ctx: AdapterContext, bsky_fake: FakeBluesky, bluesky_server: RunningFake
    ) -> None:
        login = await verify_login(
            bsky_ctx, identifier=f"@{HANDLE}", app_password=PASSWORD, service_url=bluesky_server.base_url + "/"
        )

        assert login.handle == HANDLE
        assert login.did.startswith("did:plc:")
        assert login.display_name == "Alice"
        assert login.avatar
        assert login.credentials.extra["serviceUrl"] == bluesky_server.base_url

    async def test_wrong_password_is_auth_expired(
        self, bsky_ctx: AdapterContext, bsky_fake: FakeBluesky, bluesky_server: RunningFake
    ) -> None:
        with pytest.raises(PermanentError) as caught:
            await verify_login(bsky_ctx, identifier=HANDLE, app_password="nope", service_url=bluesky_server.base_url)

        assert caught.value.error_code == "AUTH_EXPIRED"
        assert caught.value.message == "Invalid identifier or password"

    @pytest.mark.parametrize("service_url", ["ftp://pds.example", "not a url"])
    async def test_unusable_service_url_is_validation_failed(self, bsky_ctx: AdapterContext, service_url: str) -> None:
        with pytest.raises(PermanentError) as caught:
            await verify_login(bsky_ctx, identifier=HANDLE, app_password=PASSWORD, service_url=service_url)

        assert caught.value.error_code == "VALIDATION_FAILED"

    async def test_unreachable_pds_is_validation_failed(
        self, http: aiohttp.ClientSession, closed_port_url: str
    ) -> None:
        ctx = AdapterContext(http=http, timeout_seconds=1)

        with pytest.raises(PermanentError) as caught:
            await verify_login(ctx, identifier=HANDLE, app_password=PASSWORD, service_url=closed_port_url)

        assert caught.value.error_code == "VALIDATION_FAILED"


class TestValidate:
    @pytest.mark.parametrize(
        ("text", "ok"),
        [
            ("a" * 300, True),
            ("a" * 301, False),
            ("🇫🇷" * 300, True),  # 2,400 bytes, 300 graphemes
            ("👨‍👩‍👧‍👦" * 121, False),  # 121 graphemes but 3,025 bytes
            ("e\u0301" * 300, True),  # combining marks join their base
        ],
        ids=["300-ascii", "301-ascii", "300-flags", "3025-bytes", "300-combining"],
    )
    async def test_text_limits_count_graphemes_and_bytes(
        self, bsky_adapter: BlueskyAdapter, text: str, ok: bool
    ) -> None:
        problems = await bsky_adapter.validate(OutboundPost(target_id="t", text=text, account_handle=HANDLE))

        assert (problems == []) is ok

    @pytest.mark.parametrize(
        ("media", "ok"),
        [
            ((jpeg(),) * 4, True),
            ((jpeg(),) * 5, False),
            ((jpeg(size=1_000_001),), False),
            ((MediaFile(kind="VIDEO", mime_type="video/mp4", data=b"v"), jpeg()), False),
            ((MediaFile(kind="VIDEO", mime_type="video/quicktime", data=b"v"),), False),
            ((MediaFile(kind="DOCUMENT", mime_type="application/pdf", data=b"%PDF"),), False),
        ],
    )
    async def test_media_limits(self, bsky_adapter: BlueskyAdapter, media: tuple[MediaFile, ...], ok: bool) -> None:
        post = OutboundPost(target_id="t", text="x", account_handle=HANDLE, media=media)

        assert ((await bsky_adapter.validate(post)) == []) is ok
