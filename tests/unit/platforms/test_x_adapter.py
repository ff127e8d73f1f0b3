"""XAdapter against the fake X server on a loopback port."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

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
from postwright.publishing.platforms.x import (
    X_SETTINGS,
    XAdapter,
    build_authorize_url,
    exchange_code,
    fetch_profile,
)
from postwright.testing.fakes import FakeX, RunningFake

X_TOKEN = "x-access-alice"  # conftest registers alice with it


def image(size: int = 200, alt: str | None = None) -> MediaFile:
    return MediaFile(kind="IMAGE", mime_type="image/png", data=b"\x89PNG" + b"i" * size, alt_text=alt)


def video(size: int) -> MediaFile:
    return MediaFile(kind="VIDEO", mime_type="video/mp4", data=b"v" * size, duration_ms=5000)


def just_before() -> datetime:
    return datetime.now(UTC) - timedelta(seconds=1)


class TestPublish:
    async def test_text_post_sends_text_and_returns_public_url(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        result = await x_adapter.publish(x_creds, x_post)

        [sent] = x_fake.requests(path="/2/tweets")
        assert sent.method == "POST"
        assert sent.body == {"text": "Hello from postwright"}
        assert "authorization" not in sent.headers
        [stored] = x_fake.posts()
        assert result.external_post_id == stored.id
        assert result.external_url == f"https://x.com/alice/status/{stored.id}"

    async def test_images_are_uploaded_then_attached_with_alt_text(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        post = replace(x_post, media=(image(alt="a cat"), image()))

        await x_adapter.publish(x_creds, post)

        uploads = x_fake.requests(path="/2/media/upload")
        assert [u.body["media_category"] for u in uploads] == ["tweet_image", "tweet_image"]
        assert uploads[0].body["media"]["content_type"] == "image/png"
        [alt] = x_fake.requests(path="/2/media/metadata")
        assert alt.body["metadata"] == {"alt_text": {"text": "a cat"}}
        [sent] = x_fake.requests(path="/2/tweets")
        assert sent.body["media"]["media_ids"] == list(x_fake.media)
        assert x_fake.posts()[0].media_ids == list(x_fake.media)

    async def test_video_uses_chunked_upload_and_waits_for_processing(
        self, x_ctx: AdapterContext, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        adapter = XAdapter(x_ctx, replace(X_SETTINGS, chunk_bytes=1000))
        x_fake.processing_polls = 2

        await adapter.publish(x_creds, replace(x_post, media=(video(2500),)))

        [init] = x_fake.requests(op="media.initialize")
        assert init.body == {"media_type": "video/mp4", "total_bytes": 2500, "media_category": "tweet_video"}
        appends = x_fake.requests(op="media.append")
        assert [a.body["segment_index"] for a in appends] == ["0", "1", "2"]
        assert [a.body["media"]["bytes"] for a in appends] == [1000, 1000, 500]
        assert len(x_fake.requests(op="media.finalize")) == 1
        assert len(x_fake.requests(op="media.status")) == 3
        [media_id] = x_fake.media
        assert x_fake.requests(path="/2/tweets")[0].body["media"] == {"media_ids": [media_id]}

    async def test_failed_processing_is_media_rejected(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        x_fake.push_failure("media_rejected", op="media.status")

        with pytest.raises(PermanentError) as caught:
            await x_adapter.publish(x_creds, replace(x_post, media=(video(100),)))

        assert caught.value.error_code == "MEDIA_REJECTED"
        assert "Unsupported video format" in caught.value.message
        assert x_fake.posts() == []

    async def test_stuck_processing_is_retryable(
        self, x_ctx: AdapterContext, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        adapter = XAdapter(x_ctx, replace(X_SETTINGS, processing_max_wait_seconds=0.5))
        x_fake.processing_check_after_secs = 1
        x_fake.push_failure("stuck_processing", op="media.finalize")

        with pytest.raises(RetryableError):
            await adapter.publish(x_creds, replace(x_post, media=(video(100),)))

        assert x_fake.posts() == []


class TestReply:
    async def test_first_comment_replies_to_the_root_post(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        root = await x_adapter.publish(x_creds, x_post)
        comment = replace(x_post, text="first comment", reply_to_external_id=root.external_post_id)

        result = await x_adapter.reply(x_creds, comment)

        sent = x_fake.requests(path="/2/tweets")[-1]
        assert sent.body == {"text": "first comment", "reply": {"in_reply_to_tweet_id": root.external_post_id}}
        stored = x_fake.find_post(result.external_post_id)
        assert stored is not None and stored.reply_to == root.external_post_id

    async def test_reply_to_missing_post_is_content_rejected(
        self, x_adapter: XAdapter, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        with pytest.raises(PermanentError) as caught:
            await x_adapter.reply(x_creds, replace(x_post, reply_to_external_id="42"))

        assert caught.value.error_code == "CONTENT_REJECTED"


class TestFailures:
    async def test_429_with_retry_after_is_rate_limited_retryable(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        x_fake.push_failure("rate_limited", account="alice", retry_after=30, with_retry_after=True)

        with pytest.raises(RetryableError) as caught:
            await x_adapter.publish(x_creds, x_post)

        assert caught.value.rate_limited
        assert caught.value.retry_after == timedelta(seconds=30)
        assert x_fake.posts() == []

    async def test_429_without_retry_after_waits_for_the_reset_header(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        x_fake.push_failure("rate_limited", retry_after=120)

        with pytest.raises(RetryableError) as caught:
            await x_adapter.publish(x_creds, x_post)

        assert caught.value.rate_limited
        assert caught.value.retry_after is not None
        assert timedelta(seconds=100) < caught.value.retry_after <= timedelta(seconds=121)

    async def test_500_on_create_is_outcome_unknown(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        x_fake.push_failure("server_error", status=503)

        with pytest.raises(OutcomeUnknown):
            await x_adapter.publish(x_creds, x_post)

    async def test_500_on_media_upload_is_retryable(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        x_fake.push_failure("server_error", op="media.upload")

        with pytest.raises(RetryableError):
            await x_adapter.publish(x_creds, replace(x_post, media=(image(),)))

        assert x_fake.requests(path="/2/tweets") == []

    async def test_401_is_reauth_required(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        x_fake.push_failure("unauthorized", account=X_TOKEN)

        with pytest.raises(ReauthRequired):
            await x_adapter.publish(x_creds, x_post)

    async def test_expired_token_is_reauth_required(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        x_fake.expire_token(X_TOKEN)

        with pytest.raises(ReauthRequired):
            await x_adapter.publish(x_creds, x_post)

    async def test_same_text_twice_is_duplicate_content(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        await x_adapter.publish(x_creds, x_post)

        with pytest.raises(PermanentError) as caught:
            await x_adapter.publish(x_creds, x_post)

        assert caught.value.error_code == "DUPLICATE_CONTENT"
        assert "duplicate content" in caught.value.message
        assert len(x_fake.posts()) == 1

    async def test_duplicate_on_a_resend_resolves_to_the_first_post(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        sent_after = just_before()
        first = await x_adapter.publish(x_creds, x_post)

        again = await x_adapter.publish(x_creds, replace(x_post, sent_after=sent_after))

        assert again == first
        assert len(x_fake.posts()) == 1

    async def test_media_refused_on_create_is_media_rejected(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        x_fake.push_failure("media_rejected")

        with pytest.raises(PermanentError) as caught:
            await x_adapter.publish(x_creds, replace(x_post, media=(image(),)))

        assert caught.value.error_code == "MEDIA_REJECTED"

    async def test_too_long_text_is_content_rejected(
        self, x_adapter: XAdapter, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        with pytest.raises(PermanentError) as caught:
            await x_adapter.publish(x_creds, replace(x_post, text="a" * 281))

        assert caught.value.error_code == "CONTENT_REJECTED"
        assert "too long" in caught.value.message

    async def test_connection_refused_is_retryable(
        self, http: aiohttp.ClientSession, closed_port_url: str, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        adapter = XAdapter(AdapterContext(http=http, base_url=closed_port_url, timeout_seconds=1))

        with pytest.raises(RetryableError) as caught:
            await adapter.publish(x_creds, x_post)

        assert not caught.value.rate_limited

    async def test_lost_answer_is_outcome_unknown_and_lookup_finds_the_post(
        self, x_ctx: AdapterContext, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        adapter = XAdapter(replace(x_ctx, timeout_seconds=0.3))
        post = replace(x_post, text="Read https://example.com/a?b=1 & <enjoy>", sent_after=just_before())
        x_fake.push_failure("answer_lost")

        with pytest.raises(OutcomeUnknown):
            await adapter.publish(x_creds, post)
        found = await adapter.lookup(x_creds, post)

        [stored] = x_fake.posts()
        assert "https://t.co/" in stored.text and "&amp;" in stored.text
        assert found is not None
        assert found.external_post_id == stored.id

    async def test_dropped_connection_is_outcome_unknown(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        x_fake.push_failure("answer_lost", mode="drop")

        with pytest.raises(OutcomeUnknown):
            await x_adapter.publish(x_creds, x_post)

        assert len(x_fake.posts()) == 1


class TestLookup:
    async def test_returns_none_when_the_post_is_absent(
        self, x_adapter: XAdapter, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        await x_adapter.publish(x_creds, replace(x_post, text="something else"))

        assert await x_adapter.lookup(x_creds, replace(x_post, sent_after=just_before())) is None

    async def test_ignores_posts_before_the_window(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        await x_adapter.publish(x_creds, x_post)
        later = datetime.now(UTC) + timedelta(minutes=5)

        assert await x_adapter.lookup(x_creds, replace(x_post, sent_after=later)) is None
        assert x_fake.requests(op="users.tweets")[0].query["start_time"].endswith("Z")

    async def test_finds_a_post_created_long_after_the_send_was_recorded(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        # Video uploads and processing can run for minutes between recording the send and the create.
        await x_adapter.publish(x_creds, x_post)
        recorded = datetime.now(UTC) - timedelta(minutes=10)

        assert await x_adapter.lookup(x_creds, replace(x_post, sent_after=recorded)) is not None
        assert "end_time" not in x_fake.requests(op="users.tweets")[0].query

    async def test_reply_must_answer_the_same_parent(
        self, x_adapter: XAdapter, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        root = await x_adapter.publish(x_creds, x_post)
        other = await x_adapter.publish(x_creds, replace(x_post, text="other root"))
        await x_adapter.reply(x_creds, replace(x_post, text="comment", reply_to_external_id=root.external_post_id))

        wrong_parent = replace(x_post, text="comment", reply_to_external_id=other.external_post_id)
        right_parent = replace(x_post, text="comment", reply_to_external_id=root.external_post_id)

        assert await x_adapter.lookup(x_creds, wrong_parent) is None
        assert await x_adapter.lookup(x_creds, right_parent) is not None

    async def test_server_error_means_it_cannot_tell(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        x_fake.push_failure("server_error", op="users.tweets")

        with pytest.raises(OutcomeUnknown):
            await x_adapter.lookup(x_creds, x_post)

    async def test_finds_the_user_id_when_it_was_not_stored(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        await x_adapter.publish(x_creds, x_post)

        found = await x_adapter.lookup(replace(x_creds, extra={}), x_post)

        assert found is not None
        assert len(x_fake.requests(op="users.me")) == 1


class TestRefresh:
    async def test_rotation_issues_a_new_pair_and_retires_the_old_refresh_token(
        self, x_adapter: XAdapter, x_fake: FakeX, x_creds: Credentials, x_post: OutboundPost
    ) -> None:
        fresh = await x_adapter.refresh(x_creds)

        assert fresh.refresh_token not in (None, x_creds.refresh_token)
        assert fresh.access_token != x_creds.access_token
        assert fresh.expires_at is not None and fresh.expires_at > datetime.now(UTC) + timedelta(minutes=100)
        assert fresh.extra == x_creds.extra
        [call] = x_fake.requests(op="oauth.token")
        assert call.body == {"grant_type": "refresh_token", "refresh_token": x_creds.refresh_token}
        assert "client_id" not in call.body  # confidential client: Basic auth instead
        with pytest.raises(PermanentError) as caught:
            await x_adapter.refresh(x_creds)
        assert caught.value.error_code == "AUTH_EXPIRED"
        assert await x_adapter.publish(fresh, x_post)

    async def test_public_client_sends_its_client_id(
        self, http: aiohttp.ClientSession, x_server: RunningFake, x_fake: FakeX, x_creds: Credentials
    ) -> None:
        adapter = XAdapter(AdapterContext(http=http, base_url=x_server.base_url, client_id="public-app"))

        await adapter.refresh(x_creds)

        assert x_fake.requests(op="oauth.token")[0].body["client_id"] == "public-app"

    async def test_without_refresh_token_is_auth_expired(self, x_adapter: XAdapter, x_creds: Credentials) -> None:
        with pytest.raises(PermanentError) as caught:
            await x_adapter.refresh(replace(x_creds, refresh_token=None))

        assert caught.value.error_code == "AUTH_EXPIRED"


class TestConnect:
    async def test_authorize_code_exchange_and_profile(
        self, http: aiohttp.ClientSession, x_ctx: AdapterContext, x_fake: FakeX
    ) -> None:
        x_fake.register_account(username="bob", name="Bob")
        verifier = "v" * 50
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        url = build_authorize_url(x_ctx, redirect_uri="http://127.0.0.1/cb", state="s1", code_challenge=challenge)

        async with http.get(url, allow_redirects=False) as response:
            location = urlparse(response.headers["Location"])
        query = parse_qs(location.query)
        code, callback = query["code"][0], "http://127.0.0.1/cb"
        creds = await exchange_code(x_ctx, code=code, redirect_uri=callback, code_verifier=verifier)
        profile = await fetch_profile(x_ctx, creds.access_token or "")

        assert query["state"] == ["s1"]
        assert profile.username == "bob"
        assert profile.profile_image_url
        with pytest.raises(PermanentError):  # the code is single-use
            await exchange_code(x_ctx, code=code, redirect_uri=callback, code_verifier=verifier)

    async def test_profile_with_a_refused_token_is_auth_expired(self, x_ctx: AdapterContext, x_fake: FakeX) -> None:
        with pytest.raises(PermanentError) as caught:
            await fetch_profile(x_ctx, "not-a-token")

        assert caught.value.error_code == "AUTH_EXPIRED"

    async def test_sandbox_tokens_are_accepted(self, x_ctx: AdapterContext, x_fake: FakeX) -> None:
        profile = await fetch_profile(x_ctx, "sandbox-anything")

        assert profile.username.startswith("sandbox_")


class TestValidate:
    @pytest.mark.parametrize(
        ("text", "ok"),
        [
            ("a" * 280, True),
            ("a" * 281, False),
            ("日" * 140, True),
            ("日" * 141, False),
            ("https://example.com/" + "x" * 200 + " " + "a" * 256, True),  # a URL weighs 23
            ("👨‍👩‍👧‍👦" * 140, True),  # a ZWJ sequence weighs 2
            ("👍" * 141, False),
        ],
        ids=["280-ascii", "281-ascii", "140-cjk", "141-cjk", "url-23", "140-zwj", "141-emoji"],
    )
    async def test_text_length_is_weighted(
        self, x_adapter: XAdapter, x_post: OutboundPost, text: str, ok: bool
    ) -> None:
        problems = await x_adapter.validate(replace(x_post, text=text))

        assert (problems == []) is ok

    @pytest.mark.parametrize(
        ("media", "ok"),
        [
            ((image(),) * 4, True),
            ((image(),) * 5, False),
            ((MediaFile(kind="GIF", mime_type="image/gif", data=b"g"), image()), False),
            ((video(10), video(10)), False),
            ((MediaFile(kind="DOCUMENT", mime_type="application/pdf", data=b"%PDF"),), False),
            ((image(size=6 * 1024 * 1024),), False),
            ((MediaFile(kind="VIDEO", mime_type="video/mp4", data=b"v", duration_ms=200),), False),
            ((MediaFile(kind="IMAGE", mime_type="image/png", url="https://cdn/x.png"),), False),
        ],
    )
    async def test_media_limits(
        self, x_adapter: XAdapter, x_post: OutboundPost, media: tuple[MediaFile, ...], ok: bool
    ) -> None:
        problems = await x_adapter.validate(replace(x_post, media=media))

        assert (problems == []) is ok

    async def test_empty_post_is_refused(self, x_adapter: XAdapter, x_post: OutboundPost) -> None:
        assert await x_adapter.validate(replace(x_post, text="  "))
