"""Pure helpers of the adapters: text measure, record keys, facets, answer classification."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from multidict import CIMultiDict

from postwright.publishing.platforms import bluesky, x
from postwright.publishing.platforms.base import (
    HttpAnswer,
    OutcomeUnknown,
    PermanentError,
    ReauthRequired,
    RetryableError,
    _split_graphemes_fallback,
    retry_after_from,
    split_graphemes,
)


def answer(status: int, body: object, **headers: str) -> HttpAnswer:
    return HttpAnswer(status=status, headers=CIMultiDict(headers), body=json.dumps(body).encode())


class TestGraphemes:
    @pytest.mark.parametrize(
        "text",
        ["plain", "Grüße", "e\u0301", "👨‍👩‍👧‍👦 family", "🇫🇷🇩🇪🇮", "👍🏽", "1️⃣", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "a\r\nb", "日本語", "❤️"],
    )
    def test_fallback_agrees_with_uax29(self, text: str) -> None:
        assert _split_graphemes_fallback(text) == split_graphemes(text)


class TestXWeightedLength:
    @pytest.mark.parametrize(
        ("text", "length"),
        [
            ("hello", 5),
            ("日本", 4),
            ("e\u0301", 1),  # NFC first: é is one light code point
            ("see https://example.com/a/very/long/path/that/is/longer/than/23", 27),
            ("www.example.com", 23),
            ("👨‍👩‍👧‍👦", 2),
            ("“quoted”", 8),  # U+201C/U+201D sit in a light range
        ],
    )
    def test_weights(self, text: str, length: int) -> None:
        assert x.weighted_length(text) == length


class TestTid:
    def test_encodes_time_and_round_trips(self) -> None:
        moment = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
        micros = int(moment.timestamp() * 1_000_000)

        tid = bluesky.new_tid(now_us=micros, clock_id=7)

        assert len(tid) == 13
        assert bluesky.TID_PATTERN.match(tid)
        assert bluesky.tid_time(tid) == moment
        assert bluesky.created_at_for(tid) == "2026-11-25T10:00:00.123Z"

    def test_sorts_by_time(self) -> None:
        early = bluesky.new_tid(now_us=1_700_000_000_000_000, clock_id=1023)
        late = bluesky.new_tid(now_us=1_700_000_000_000_001, clock_id=0)

        assert early < late


class TestFacetSpans:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("go to https://a.com/x.", [("link", "https://a.com/x")]),
            ("(see https://a.com/x)", [("link", "https://a.com/x")]),
            ("wiki https://en.wikipedia.org/wiki/Foo_(bar)!", [("link", "https://en.wikipedia.org/wiki/Foo_(bar)")]),
            ("mail bob@example.com please", []),
            ("hi @bob.example.com.", [("mention", "bob.example.com")]),
            ("hi @nodot", []),
            ("#️⃣ and #1 and #ok, #tag!", [("tag", "ok"), ("tag", "tag")]),
            ("#" + "a" * 65, []),
            ("https://a.com/#frag", [("link", "https://a.com/#frag")]),
        ],
    )
    def test_detection(self, text: str, expected: list[tuple[str, str]]) -> None:
        assert [(s.kind, s.value) for s in bluesky.find_facet_spans(text)] == expected

    def test_unresolved_mentions_are_left_out(self) -> None:
        text = "@a.test @b.test"
        spans = bluesky.find_facet_spans(text)

        facets = bluesky.build_facets(text, spans, {"b.test": "did:plc:b"})

        assert facets == [
            {
                "index": {"byteStart": 8, "byteEnd": 15},
                "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:b"}],
            }
        ]


class TestSessionHelpers:
    def test_jwt_expiry_reads_exp(self) -> None:
        claims = base64.urlsafe_b64encode(json.dumps({"exp": 1_800_000_000}).encode()).decode().rstrip("=")

        assert bluesky.jwt_expiry(f"h.{claims}.s") == datetime.fromtimestamp(1_800_000_000, UTC)
        assert bluesky.jwt_expiry("not-a-jwt") is None

    @pytest.mark.parametrize("uri", ["https://bsky.app/x", "at://did:plc:a/app.bsky.feed.post", "at://a//b"])
    def test_bad_at_uri_is_validation_failed(self, uri: str) -> None:
        with pytest.raises(PermanentError) as caught:
            bluesky.parse_at_uri(uri)

        assert caught.value.error_code == "VALIDATION_FAILED"


class TestXClassify:
    def test_usage_cap_is_permanent_rate_limited(self) -> None:
        body = {"title": "UsageCapExceeded", "type": "https://api.twitter.com/2/problems/usage-capped", "status": 429}

        error = x.classify(answer(429, body), creates=True)

        assert isinstance(error, PermanentError) and error.error_code == "RATE_LIMITED"

    def test_long_video_is_media_rejected(self) -> None:
        body = {"title": "Forbidden", "detail": "This user is not allowed to post a video longer than 2 minutes."}

        error = x.classify(answer(403, body), creates=True)

        assert isinstance(error, PermanentError) and error.error_code == "MEDIA_REJECTED"

    def test_spent_daily_cap_waits_for_the_daily_reset(self) -> None:
        now = int(datetime.now(UTC).timestamp())
        headers = {
            "x-rate-limit-reset": str(now + 60),
            "x-user-limit-24hour-remaining": "0",
            "x-user-limit-24hour-reset": str(now + 7200),
        }

        error = x.classify(answer(429, {"errors": [{"code": 88}]}, **headers), creates=True)

        assert isinstance(error, RetryableError) and error.rate_limited
        assert error.retry_after is not None and error.retry_after > timedelta(minutes=110)

    def test_other_statuses(self) -> None:
        assert isinstance(x.classify(answer(401, {}), creates=True), ReauthRequired)
        assert isinstance(x.classify(answer(502, {}), creates=True), OutcomeUnknown)
        assert isinstance(x.classify(answer(502, {}), creates=False), RetryableError)
        not_found = x.classify(answer(404, {}), creates=False)
        assert isinstance(not_found, PermanentError) and not_found.error_code == "PLATFORM_ERROR"


class TestBlueskyClassify:
    @pytest.mark.parametrize(
        ("status", "body", "code"),
        [
            (400, {"error": "AccountTakedown", "message": "Account has been taken down"}, "CONTENT_REJECTED"),
            (413, {"error": "PayloadTooLarge", "message": "request entity too large"}, "MEDIA_REJECTED"),
            (400, {"error": "InvalidRequest", "message": "Invalid record key"}, "PLATFORM_ERROR"),
            (400, {"error": "BlobNotFound", "message": "Could not find blob: x"}, "MEDIA_REJECTED"),
        ],
    )
    def test_permanent_codes(self, status: int, body: dict[str, str], code: str) -> None:
        error = bluesky.classify(answer(status, body), creates=True)

        assert isinstance(error, PermanentError) and error.error_code == code

    @pytest.mark.parametrize("name", ["ExpiredToken", "InvalidToken"])
    def test_session_errors_need_reauth(self, name: str) -> None:
        assert isinstance(bluesky.classify(answer(400, {"error": name}), creates=True), ReauthRequired)


class TestRetryAfter:
    def test_http_date(self) -> None:
        when = datetime.now(UTC) + timedelta(seconds=90)

        wait = retry_after_from(CIMultiDict({"Retry-After": format_datetime(when, usegmt=True)}))

        assert wait is not None and timedelta(seconds=80) < wait <= timedelta(seconds=90)

    def test_nothing_known(self) -> None:
        assert retry_after_from(CIMultiDict(), "x-rate-limit-reset") is None
