"""SSRF guard: the address policy table, then fetch_url / fetch_media (refusals, pinning,
redirects, caps and timeouts).

Every test passes the conftest ``ConnectRecorder`` as the connect step. Refusals assert that it
recorded nothing (or only the loopback hops), i.e. no connection to the refused address was
even attempted. Real sockets only ever open to 127.0.0.1.
"""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from yarl import URL

from postwright.media.ssrf import (
    FetchRefused,
    MediaKind,
    PinnedResolver,
    PinnedTarget,
    check_address,
    classify_address,
    fetch_media,
    fetch_url,
    system_resolver,
)

# --------------------------------------------------------------------------------------------
# Address policy (no network)
# --------------------------------------------------------------------------------------------
# (address, substring of the refusal label)
FORBIDDEN: list[tuple[str, str]] = [
    # loopback
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    # private
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("fc00::1", "unique local"),
    ("fd12:3456:789a::1", "unique local"),
    # link-local / site-local
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    # cloud metadata
    ("169.254.169.254", "metadata"),
    ("169.254.170.2", "metadata"),
    ("100.100.100.200", "metadata"),
    ("fd00:ec2::254", "metadata"),
    # CGNAT
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    # multicast / broadcast / reserved / unspecified
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    # IPv4 embedded in IPv6
    ("::ffff:127.0.0.1", "IPv4-mapped"),
    ("::ffff:10.0.0.1", "IPv4-mapped"),
    ("::ffff:8.8.8.8", "IPv4-mapped"),
    ("::127.0.0.1", "IPv4-compatible"),
    ("::8.8.8.8", "IPv4-compatible"),
    ("2002:7f00:1::1", "6to4 address embedding a loopback"),
    ("2002:a00:1::1", "6to4 address embedding a private"),
    ("2002:a9fe:a9fe::1", "6to4 address embedding a cloud metadata"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("64:ff9b::10.0.0.1", "NAT64 address embedding a private"),
    ("64:ff9b::169.254.169.254", "NAT64 address embedding a cloud metadata"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    # documentation / benchmarking / protocol assignments / discard
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("192.0.0.8", "IETF protocol"),
    ("192.88.99.1", "6to4 relay"),
    ("100::1", "discard"),
    ("2001:10::1", "IETF protocol"),
    # outside IPv6 global unicast
    ("4000::1", "reserved"),
    # zone ids do not change the verdict
    ("fe80::1%eth0", "link-local"),
]

ALLOWED = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.32.0.1",  # just above 172.16/12
    "2606:4700:4700::1111",
    "2a00:1450:4001:80e::200e",
    "2002:808:808::1",  # 6to4 of a public address
    "64:ff9b::8.8.8.8",  # DNS64/NAT64 of a public address
]


@pytest.mark.parametrize(("address", "label"), FORBIDDEN)
def test_forbidden_addresses_are_refused(address: str, label: str) -> None:
    with pytest.raises(FetchRefused) as info:
        check_address(address)
    assert info.value.reason == "forbidden_address"
    assert label in str(info.value)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    check_address(address)
    assert classify_address(address) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "127.1.2.3", "::1"])
def test_allow_loopback_exempts_only_real_loopback(address: str) -> None:
    assert classify_address(address, allow_loopback=True) is None


@pytest.mark.parametrize(
    "address",
    [a for a, _ in FORBIDDEN if a not in ("127.0.0.1", "127.255.255.254", "::1")],
)
def test_allow_loopback_keeps_everything_else_refused(address: str) -> None:
    assert classify_address(address, allow_loopback=True) is not None


def test_non_ip_is_refused() -> None:
    with pytest.raises(FetchRefused):
        check_address("example.com")


LOOPBACK = {"127.0.0.1", "127.255.255.254", "::1"}
PUBLIC_IP = "93.184.216.34"


def _literal_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# --------------------------------------------------------------------------------------------
# Refusals before any connection: every forbidden class, by name and by literal
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "label", "allow_loopback_http"),
    [
        (address, label, flag)
        for address, label in FORBIDDEN
        if "%" not in address
        for flag in (False, True)
        # loopback is the one class the test-only flag allows
        if not (flag and address in LOOPBACK)
    ],
)
async def test_name_resolving_to_forbidden_address_is_refused(
    address: str, label: str, allow_loopback_http: bool, recorder: Any, make_resolver: Any
) -> None:
    resolver = make_resolver({"target.test": [address]})
    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            "https://target.test/media.png",
            max_bytes=1000,
            resolver=resolver,
            connector_factory=recorder,
            allow_loopback_http=allow_loopback_http,
        )
    assert info.value.reason == "forbidden_address"
    assert label in str(info.value)
    assert "target.test" in str(info.value)
    assert address not in str(info.value)  # never leak what an internal name resolves to
    assert recorder.targets == []
    assert resolver.calls == [("target.test", 443)]


@pytest.mark.parametrize(("address", "label"), [f for f in FORBIDDEN if "%" not in f[0]])
async def test_ip_literal_forbidden_address_is_refused(
    address: str, label: str, recorder: Any, make_resolver: Any
) -> None:
    resolver = make_resolver({})
    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            f"https://{_literal_host(address)}:8443/x",
            max_bytes=1000,
            resolver=resolver,
            connector_factory=recorder,
        )
    assert info.value.reason == "forbidden_address"
    assert label in str(info.value)
    assert recorder.targets == []
    assert resolver.calls == []  # literals are never sent to a resolver


async def test_any_forbidden_answer_refuses_the_host(recorder: Any, make_resolver: Any) -> None:
    resolver = make_resolver({"mixed.test": [PUBLIC_IP, "2606:4700::1", "10.0.0.7"]})
    with pytest.raises(FetchRefused) as info:
        await fetch_url("https://mixed.test/", max_bytes=10, resolver=resolver, connector_factory=recorder)
    assert info.value.reason == "forbidden_address"
    assert recorder.targets == []


@pytest.mark.parametrize(
    ("url", "reason", "allow_loopback_http"),
    [
        ("http://public.test/a.png", "scheme", False),
        ("http://public.test/a.png", "scheme", True),  # plain http only to loopback, even in tests
        ("http://127.0.0.1/a.png", "scheme", False),
        ("ftp://public.test/a.png", "scheme", False),
        ("file:///etc/passwd", "scheme", False),
        ("gopher://public.test/", "scheme", True),
        ("https://user:secret@public.test/a.png", "userinfo", False),
        ("https://user@public.test/a.png", "userinfo", False),
        ("https://public.test:0/a.png", "port", False),
        ("https://2130706433/", "invalid_url", False),
        ("https://127.1/", "invalid_url", False),
        ("https://0x7f.0.0.1/", "invalid_url", False),
        ("https://017700000001/", "invalid_url", False),
        ("https://[fe80::1%25eth0]/", "invalid_url", False),
        ("/relative/path.png", "invalid_url", False),
        ("https://unknown.test/", "resolve", False),
        ("https://empty.test/", "resolve", False),
        ("https://garbage.test/", "resolve", False),
    ],
)
async def test_url_shape_refusals(
    url: str, reason: str, allow_loopback_http: bool, recorder: Any, make_resolver: Any
) -> None:
    resolver = make_resolver({"public.test": [PUBLIC_IP], "empty.test": [], "garbage.test": ["not-an-ip"]})
    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            url,
            max_bytes=1000,
            resolver=resolver,
            connector_factory=recorder,
            allow_loopback_http=allow_loopback_http,
        )
    assert info.value.reason == reason, str(info.value)
    assert recorder.targets == []


async def test_non_default_ports_are_allowed(recorder: Any, make_resolver: Any) -> None:
    # Port policy: any port, the address check is what matters. The recorder proves the hop was
    # accepted (and stops it before any socket, since the address is public).
    resolver = make_resolver({"cdn.test": [PUBLIC_IP]})
    with pytest.raises(AssertionError, match="non-loopback"):
        await fetch_url("https://cdn.test:8443/a.png", max_bytes=10, resolver=resolver, connector_factory=recorder)
    assert [(t.hostname, t.port, t.addresses) for t in recorder.targets] == [("cdn.test", 8443, (PUBLIC_IP,))]


# --------------------------------------------------------------------------------------------
# Loopback happy paths (test-only flag)
# --------------------------------------------------------------------------------------------


async def test_loopback_http_happy_path(media_server: Any, recorder: Any, png_bytes: bytes) -> None:
    fetched = await fetch_url(
        f"{media_server.base}/png",
        max_bytes=10_000,
        allow_loopback_http=True,
        connector_factory=recorder,
    )
    assert fetched.data == png_bytes
    assert fetched.content_type == "image/png"
    assert fetched.final_url == f"{media_server.base}/png"
    assert recorder.addresses == [("127.0.0.1",)]


async def test_loopback_refused_without_flag(media_server: Any, recorder: Any) -> None:
    with pytest.raises(FetchRefused) as info:
        await fetch_url(f"{media_server.base}/png", max_bytes=10_000, connector_factory=recorder)
    assert info.value.reason == "scheme"
    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            f"https://127.0.0.1:{media_server.https_port}/png", max_bytes=10_000, connector_factory=recorder
        )
    assert info.value.reason == "forbidden_address"
    assert recorder.targets == []


async def test_system_resolver_numeric_host() -> None:
    # system_resolver on a numeric host never leaves the machine.
    assert await system_resolver("127.0.0.1", 80) == ["127.0.0.1"]


async def test_resolution_happens_once_and_connection_is_pinned(media_server: Any, recorder: Any) -> None:
    """DNS rebinding: a second lookup would say 10.0.0.1, but there is no second lookup."""
    answers = [["127.0.0.1"], ["10.0.0.1"]]
    calls: list[str] = []

    async def rebinding_resolver(host: str, port: int) -> list[str]:
        calls.append(host)
        return answers[min(len(calls) - 1, 1)]

    url = f"http://rebind.test:{media_server.http_port}/echo-host"
    fetched = await fetch_url(
        url, max_bytes=1000, resolver=rebinding_resolver, allow_loopback_http=True, connector_factory=recorder
    )
    # Host header keeps the original name: the request went to the pinned IP "as" rebind.test.
    assert fetched.data.decode() == f"rebind.test:{media_server.http_port}"
    assert calls == ["rebind.test"]
    assert recorder.addresses == [("127.0.0.1",)]


async def test_pinned_resolver_refuses_other_hosts() -> None:
    target = PinnedTarget(
        url=URL("https://a.test/"), scheme="https", hostname="a.test", port=443, addresses=("127.0.0.1",)
    )
    resolver = PinnedResolver(target)
    [result] = await resolver.resolve("A.test.", 443, socket.AF_UNSPEC)
    assert result["host"] == "127.0.0.1"
    assert result["hostname"] == "A.test."
    with pytest.raises(OSError):
        await resolver.resolve("b.test", 443)
    with pytest.raises(OSError):
        await resolver.resolve("a.test", 443, socket.AF_INET6)


# --------------------------------------------------------------------------------------------
# Redirects
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://10.0.0.1/latest", "forbidden_address"),
        ("http://internal.test/admin", "forbidden_address"),  # resolves to 192.168.1.1
        ("http://metadata.test/latest/meta-data/", "forbidden_address"),  # resolves to 169.254.169.254
        ("https://[::ffff:7f00:1]/", "forbidden_address"),
        ("https://[fd00:ec2::254]/latest/meta-data/", "forbidden_address"),
        ("http://public.test/a.png", "scheme"),  # plain http to a public host
        ("ftp://127.0.0.1/a.png", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("http://user:pw@127.0.0.1/png", "userinfo"),
    ],
)
async def test_redirect_targets_are_rechecked(
    location: str, reason: str, media_server: Any, recorder: Any, make_resolver: Any
) -> None:
    resolver = make_resolver(
        {
            "internal.test": ["192.168.1.1"],
            "metadata.test": ["169.254.169.254"],
            "public.test": [PUBLIC_IP],
        }
    )
    url = URL(f"{media_server.base}/redirect").with_query(to=location)
    with pytest.raises(FetchRefused) as info:
        await fetch_url(url, max_bytes=1000, resolver=resolver, allow_loopback_http=True, connector_factory=recorder)
    assert info.value.reason == reason, str(info.value)
    # Only the first (loopback) hop ever reached the connect step.
    assert recorder.addresses == [("127.0.0.1",)]


async def test_relative_redirect_is_followed(media_server: Any, recorder: Any, png_bytes: bytes) -> None:
    url = URL(f"{media_server.base}/redirect").with_query(to="/png", status="307")
    fetched = await fetch_url(url, max_bytes=10_000, allow_loopback_http=True, connector_factory=recorder)
    assert fetched.data == png_bytes
    assert fetched.final_url == f"{media_server.base}/png"
    assert len(recorder.targets) == 2  # each hop is prepared (and pinned) on its own


async def test_three_redirects_are_allowed(media_server: Any, recorder: Any, png_bytes: bytes) -> None:
    fetched = await fetch_url(
        f"{media_server.base}/chain/3", max_bytes=10_000, allow_loopback_http=True, connector_factory=recorder
    )
    assert fetched.data == png_bytes
    assert len(recorder.targets) == 4


async def test_too_many_redirects(media_server: Any, recorder: Any) -> None:
    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            f"{media_server.base}/chain/4", max_bytes=10_000, allow_loopback_http=True, connector_factory=recorder
        )
    assert info.value.reason == "too_many_redirects"
    assert len(recorder.targets) == 4


async def test_redirect_without_location(media_server: Any, recorder: Any) -> None:
    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            f"{media_server.base}/redirect", max_bytes=10_000, allow_loopback_http=True, connector_factory=recorder
        )
    assert info.value.reason == "redirect"


# --------------------------------------------------------------------------------------------
# HTTPS with a "public" host rerouted to the loopback TLS server
# --------------------------------------------------------------------------------------------


async def test_https_pins_ip_but_verifies_certificate_for_hostname(
    media_server: Any, make_recorder: Any, make_resolver: Any
) -> None:
    recorder = make_recorder(reroute_port=media_server.https_port)
    resolver = make_resolver({"public.test": [PUBLIC_IP]})
    fetched = await fetch_url(
        "https://public.test/echo-host",
        max_bytes=1000,
        resolver=resolver,
        connector_factory=recorder,
        ssl_context=media_server.tls.client_context,
    )
    assert fetched.data == b"public.test"
    assert recorder.addresses == [(PUBLIC_IP,)]


async def test_https_certificate_for_other_name_is_refused(
    media_server: Any, make_recorder: Any, make_resolver: Any
) -> None:
    recorder = make_recorder(reroute_port=media_server.https_port)
    resolver = make_resolver({"wrong.test": [PUBLIC_IP]})
    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            "https://wrong.test/png",
            max_bytes=1000,
            resolver=resolver,
            connector_factory=recorder,
            ssl_context=media_server.tls.client_context,
        )
    assert info.value.reason == "tls"


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("https://127.0.0.1/png", "forbidden_address"),
        ("https://localhost.test/png", "forbidden_address"),  # a name resolving to 127.0.0.1
        ("https://[::1]/png", "forbidden_address"),
        ("http://public.test/png", "scheme"),  # https -> http downgrade
    ],
)
async def test_redirect_from_public_https_to_loopback_is_refused(
    location: str, reason: str, media_server: Any, make_recorder: Any, make_resolver: Any
) -> None:
    recorder = make_recorder(reroute_port=media_server.https_port)
    resolver = make_resolver({"public.test": [PUBLIC_IP], "localhost.test": ["127.0.0.1"]})
    url = URL("https://public.test/redirect").with_query(to=location)
    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            url,
            max_bytes=1000,
            resolver=resolver,
            connector_factory=recorder,
            ssl_context=media_server.tls.client_context,
        )
    assert info.value.reason == reason, str(info.value)
    assert recorder.addresses == [(PUBLIC_IP,)]


# --------------------------------------------------------------------------------------------
# Size caps, status codes, timeouts
# --------------------------------------------------------------------------------------------


async def test_content_length_over_cap_is_refused(media_server: Any, recorder: Any) -> None:
    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            f"{media_server.base}/sized/5000?cl=1",
            max_bytes=1000,
            allow_loopback_http=True,
            connector_factory=recorder,
        )
    assert info.value.reason == "too_large"


async def test_streamed_body_over_cap_is_aborted(media_server: Any, recorder: Any) -> None:
    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            f"{media_server.base}/sized/5000?cl=0",
            max_bytes=1000,
            allow_loopback_http=True,
            connector_factory=recorder,
        )
    assert info.value.reason == "too_large"


@pytest.mark.parametrize("chunked", ["0", "1"])
async def test_body_at_cap_is_accepted(media_server: Any, recorder: Any, chunked: str) -> None:
    fetched = await fetch_url(
        f"{media_server.base}/sized/1000?cl={chunked}",
        max_bytes=1000,
        allow_loopback_http=True,
        connector_factory=recorder,
    )
    assert len(fetched.data) == 1000


async def test_cap_for_head_tightens_the_limit(media_server: Any, recorder: Any) -> None:
    heads: list[bytes] = []

    def cap_for_head(head: bytes) -> int:
        heads.append(head)
        return 600

    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            f"{media_server.base}/sized/5000?cl=0",
            max_bytes=10_000,
            allow_loopback_http=True,
            connector_factory=recorder,
            cap_for_head=cap_for_head,
        )
    assert info.value.reason == "too_large"
    assert len(heads) == 1 and heads[0].startswith(b"\x89PNG")


async def test_error_status_is_refused(media_server: Any, recorder: Any) -> None:
    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            f"{media_server.base}/status/404", max_bytes=1000, allow_loopback_http=True, connector_factory=recorder
        )
    assert info.value.reason == "upstream_status"
    assert "404" in str(info.value)


@pytest.mark.parametrize("path", ["/slow", "/slow-body"])
async def test_total_timeout(media_server: Any, recorder: Any, path: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchRefused) as info:
        await fetch_url(
            f"{media_server.base}{path}",
            max_bytes=100_000,
            total_timeout=0.3,
            allow_loopback_http=True,
            connector_factory=recorder,
        )
    assert info.value.reason == "timeout"
    assert time.monotonic() - started < 2


async def test_connection_refused_is_reported(recorder: Any) -> None:
    # Bind and close to find a loopback port nobody listens on.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FetchRefused) as info:
        await fetch_url(f"http://127.0.0.1:{port}/", max_bytes=10, allow_loopback_http=True, connector_factory=recorder)
    assert info.value.reason == "connect"


# --------------------------------------------------------------------------------------------
# fetch_media: sniffing and per-kind caps while streaming
# --------------------------------------------------------------------------------------------


async def test_fetch_media_sniffs_and_returns_kind(media_server: Any, recorder: Any, png_bytes: bytes) -> None:
    fetched, found = await fetch_media(f"{media_server.base}/png", allow_loopback_http=True, connector_factory=recorder)
    assert fetched.data == png_bytes
    assert found.kind is MediaKind.IMAGE
    assert found.mime == "image/png"


async def test_fetch_media_refuses_unsupported_content(media_server: Any, recorder: Any) -> None:
    with pytest.raises(FetchRefused) as info:
        await fetch_media(f"{media_server.base}/text", allow_loopback_http=True, connector_factory=recorder)
    assert info.value.reason == "unsupported_type"


async def test_fetch_media_max_bytes(media_server: Any, recorder: Any) -> None:
    with pytest.raises(FetchRefused) as info:
        await fetch_media(
            f"{media_server.base}/sized/5000?cl=0",
            allow_loopback_http=True,
            connector_factory=recorder,
            max_bytes=2000,
        )
    assert info.value.reason == "too_large"
