"""Fetching user-supplied media URLs safely, and deciding what a blob of bytes is.

This module decides three things:

* **Which addresses the server may talk to** when a user hands us a URL (``check_address``):
  only publicly routable unicast addresses. Loopback, private (RFC 1918 / ULA), link-local,
  CGNAT, multicast, broadcast, reserved, unspecified, documentation and benchmarking ranges,
  cloud metadata endpoints and every IPv6 form that smuggles an IPv4 address (IPv4-mapped,
  IPv4-compatible, Teredo, plus 6to4 and NAT64 whose embedded address is forbidden) are refused.
* **How a URL is fetched** (``fetch_url``): HTTPS only; the host is resolved exactly once per hop,
  *every* resolved address must pass ``check_address``, and the connection is then pinned to those
  addresses so a second DNS answer can never redirect us (DNS rebinding). Redirects are followed
  by hand (at most ``MAX_REDIRECTS``) and every hop is checked from scratch. The body is streamed
  under a byte cap and the whole fetch runs under one total timeout.
* **What a file is** (``sniff`` / ``check_media``): kind and MIME type come from magic bytes, never
  from a client's or remote server's ``Content-Type``; each kind has its own size cap.

Decisions worth knowing:

* Ports: any explicit port 1-65535 is allowed. The address checks are what protect internal
  services; a public host on port 8443 is as harmless as one on 443, and refusing odd ports would
  only break legitimate CDNs.
* URLs with userinfo (``https://user:pass@host/``) are refused: they are a classic parser-confusion
  vector and a media URL never needs credentials.
* IP-literal hosts are checked like resolved ones; non-canonical numeric hosts (``2130706433``,
  ``127.1``, ``0x7f.1``) and IPv6 zone ids are refused outright because resolvers disagree on them.
* ``allow_loopback_http`` is a test-only escape hatch: it allows loopback addresses (127.0.0.0/8,
  ``::1``) and plain ``http://``, the latter *only* to loopback. Everything else stays refused.
  Production configuration must never set it.
* Refusal messages name the host and the class of address but never the resolved IP, so the
  endpoint cannot be used to map internal DNS.
* Fetched bytes are buffered in memory (``FetchedFile.data``), which is why the video cap is
  512 MiB rather than the multi-GiB limits some platforms accept.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

__all__ = [
    "DEFAULT_FETCH_TIMEOUT",
    "MAX_FETCH_BYTES",
    "MAX_REDIRECTS",
    "SIZE_CAPS",
    "SNIFF_BYTES",
    "SUPPORTED_TYPES_TEXT",
    "CapForHead",
    "ConnectorFactory",
    "FetchRefused",
    "FetchedFile",
    "MediaKind",
    "MediaRejected",
    "PinnedResolver",
    "PinnedTarget",
    "Resolver",
    "Sniffed",
    "check_address",
    "check_media",
    "classify_address",
    "fetch_media",
    "fetch_url",
    "kind_for_mime",
    "normalize_mime",
    "pinned_connector",
    "sniff",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MiB = 1024 * 1024


class MediaKind(StrEnum):
    """Kinds of media asset. Values equal the names so they round-trip through DB enums and JSON."""

    IMAGE = "IMAGE"
    GIF = "GIF"
    VIDEO = "VIDEO"
    DOCUMENT = "DOCUMENT"


# Per-kind caps. They sit at or slightly above the most generous mainstream platform limit for
# each kind (X: 5 MB images / 15 MB GIFs / 512 MB video; Instagram 8 MB images; LinkedIn 100 MB
# documents), so anything larger would be rejected downstream anyway. Video is bounded by the
# fact that we buffer in memory, not by platforms.
SIZE_CAPS: dict[MediaKind, int] = {
    MediaKind.IMAGE: 20 * MiB,
    MediaKind.GIF: 15 * MiB,
    MediaKind.VIDEO: 512 * MiB,
    MediaKind.DOCUMENT: 100 * MiB,
}
MAX_FETCH_BYTES: int = max(SIZE_CAPS.values())
MAX_REDIRECTS: int = 3
# Generous enough for a 512 MiB video over a ~40 Mbit/s link; callers with a known kind can pass less.
DEFAULT_FETCH_TIMEOUT: float = 120.0
# Enough for every signature below (ftyp brands, EBML DocType); fetch waits for this many bytes
# before deciding which per-kind cap applies.
SNIFF_BYTES: int = 512
USER_AGENT = "postwright-media-fetch/1.0"


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class MediaRejected(Exception):
    """A media file or URL was refused. ``str(exc)`` is safe to show to the API caller (HTTP 400).

    ``reason`` is a stable machine-readable code for logs, metrics and API error codes.
    """

    def __init__(self, message: str, *, reason: str = "rejected") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class FetchRefused(MediaRejected):
    """Fetching a URL was refused or failed; nothing may be stored.

    Reasons: ``invalid_url``, ``scheme``, ``userinfo``, ``port``, ``resolve``, ``forbidden_address``,
    ``redirect``, ``too_many_redirects``, ``upstream_status``, ``too_large``, ``unsupported_type``,
    ``timeout``, ``tls``, ``connect``.
    """


# --------------------------------------------------------------------------------------------
# Address policy
# --------------------------------------------------------------------------------------------


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...]:
    return tuple((ipaddress.ip_network(net), label) for net, label in pairs)


# Order matters only for the label reported: more specific entries come first.
_V4_BLOCKS = _nets(
    ("169.254.169.254/32", "cloud metadata service"),
    ("169.254.170.2/32", "cloud metadata service"),  # ECS task metadata
    ("100.100.100.200/32", "cloud metadata service"),  # Alibaba Cloud
    ("0.0.0.0/8", "unspecified ('this network') address"),
    ("127.0.0.0/8", "loopback address"),
    ("10.0.0.0/8", "private address"),
    ("172.16.0.0/12", "private address"),
    ("192.168.0.0/16", "private address"),
    ("100.64.0.0/10", "carrier-grade NAT address"),
    ("169.254.0.0/16", "link-local address"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation address"),
    ("198.51.100.0/24", "documentation address"),
    ("203.0.113.0/24", "documentation address"),
    ("192.88.99.0/24", "6to4 relay anycast address"),
    ("198.18.0.0/15", "benchmarking address"),
    ("224.0.0.0/4", "multicast address"),
    ("255.255.255.255/32", "broadcast address"),
    ("240.0.0.0/4", "reserved address"),
)

_NAT64_WKP = ipaddress.IPv6Network("64:ff9b::/96")
_V6_BLOCKS = _nets(
    ("::/128", "unspecified address"),
    ("::1/128", "loopback address"),
    ("::/96", "IPv4-compatible IPv6 address"),
    ("fd00:ec2::254/128", "cloud metadata service"),
    ("64:ff9b:1::/48", "local-use NAT64 address"),
    ("100::/64", "discard-only address"),
    ("2001:db8::/32", "documentation address"),
    ("3fff::/20", "documentation address"),
    ("2001::/23", "IETF protocol assignment"),
    ("fc00::/7", "unique local (private) address"),
    ("fe80::/10", "link-local address"),
    ("fec0::/10", "site-local address"),
    ("ff00::/8", "multicast address"),
    ("::/8", "reserved address"),
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _parse_ip(ip: str | IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        addr = ip
    else:
        try:
            addr = ipaddress.ip_address(ip.strip().strip("[]"))
        except ValueError:
            raise FetchRefused(f"{ip!r} is not an IP address", reason="invalid_url") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        # Network membership ignores the zone; dropping it keeps comparisons exact.
        addr = ipaddress.IPv6Address(int(addr))
    return addr


def _v4_label(addr: ipaddress.IPv4Address) -> str | None:
    for net, label in _V4_BLOCKS:
        if addr in net:
            return label
    # Backstop for special-purpose ranges IANA adds later: the stdlib tracks the registry.
    if not addr.is_global:
        return "non-public address"
    return None


def _v6_label(addr: ipaddress.IPv6Address) -> str | None:
    if addr.ipv4_mapped is not None:
        # Always refused, whatever it embeds: dual-stack sockets turn these into IPv4 connections,
        # and no legitimate DNS answer contains one.
        return "IPv4-mapped IPv6 address"
    if addr in _NAT64_WKP:
        # On IPv6-only hosts DNS64 legitimately answers 64:ff9b::a.b.c.d for IPv4-only sites, so
        # judge the IPv4 address the NAT64 gateway would actually reach.
        inner = _v4_label(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
        return f"NAT64 address embedding a {inner}" if inner else None
    if addr.sixtofour is not None:
        inner = _v4_label(addr.sixtofour)
        return f"6to4 address embedding a {inner}" if inner else None
    if addr.teredo is not None:
        return "Teredo tunnel address"
    for net, label in _V6_BLOCKS:
        if addr in net:
            return label
    if addr not in _V6_GLOBAL_UNICAST:
        return "reserved address"
    if not addr.is_global:
        return "non-public address"
    return None


def classify_address(ip: str | IPAddress, *, allow_loopback: bool = False) -> str | None:
    """Return a human label for why ``ip`` is forbidden (e.g. ``"private address"``), or None if allowed.

    ``allow_loopback`` exempts 127.0.0.0/8 and ``::1`` only (not IPv4-mapped loopback); it exists
    for tests that serve content from 127.0.0.1.
    """
    addr = _parse_ip(ip)
    if allow_loopback and addr.is_loopback:
        return None
    if isinstance(addr, ipaddress.IPv4Address):
        return _v4_label(addr)
    return _v6_label(addr)


def check_address(ip: str | IPAddress, *, allow_loopback: bool = False) -> None:
    """Raise ``FetchRefused`` (reason ``forbidden_address``) unless ``ip`` is a public unicast address."""
    label = classify_address(ip, allow_loopback=allow_loopback)
    if label is not None:
        raise FetchRefused(
            f"refusing to fetch from {ip}: it is a forbidden address ({label})", reason="forbidden_address"
        )


# --------------------------------------------------------------------------------------------
# Resolution and pinning
# --------------------------------------------------------------------------------------------

Resolver = Callable[[str, int], Awaitable[Sequence[str | IPAddress]]]
"""``async (hostname, port) -> addresses``. Called exactly once per hop."""


async def system_resolver(host: str, port: int) -> list[str]:
    """Default resolver: the event loop's ``getaddrinfo`` (TCP only), de-duplicated in answer order."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class PinnedTarget:
    """One hop, after validation: the only addresses a connection for ``hostname`` may go to."""

    url: URL
    scheme: str
    hostname: str
    port: int
    addresses: tuple[str, ...]


ConnectorFactory = Callable[[PinnedTarget], aiohttp.BaseConnector]
"""Builds the connector for one hop. This is the connect step tests replace with a recorder."""


def _norm_host(host: str) -> str:
    return host.rstrip(".").lower()


class PinnedResolver(AbstractResolver):
    """aiohttp resolver that answers for a single hostname with addresses we already checked.

    Why this is rebinding-safe: aiohttp asks its connector's resolver for the address of
    ``req.url.raw_host`` right before opening the socket. Installing this resolver (with
    ``use_dns_cache=False`` and a fresh connector per hop) means that second lookup never touches
    DNS: it can only return the addresses ``fetch_url`` resolved once and validated. Any other
    hostname raises, so nothing inside aiohttp can reach an unchecked address. Because only the
    socket address is substituted, aiohttp still sends ``Host: <hostname>`` and uses the hostname
    for TLS SNI and certificate verification (``server_hostname``), so TLS protects the name the
    user gave us, not the IP.
    """

    def __init__(self, target: PinnedTarget) -> None:
        self._target = target

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if _norm_host(host) != _norm_host(self._target.hostname):
            raise OSError(f"resolver is pinned to {self._target.hostname!r}; refusing to resolve {host!r}")
        results: list[ResolveResult] = []
        for address in self._target.addresses:
            addr_family = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, addr_family):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=port,
                    family=addr_family,
                    proto=0,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not results:
            raise OSError(f"no pinned address for {host!r} in the requested address family")
        return results

    async def close(self) -> None:
        return None


def pinned_connector(target: PinnedTarget) -> aiohttp.BaseConnector:
    """Default ``ConnectorFactory``: a one-shot TCP connector that can only reach ``target.addresses``."""
    return aiohttp.TCPConnector(
        resolver=PinnedResolver(target),
        use_dns_cache=False,  # the cache would be keyed by hostname and outlive the pin
        force_close=True,
        limit=1,
    )


# Hosts made only of digits/hex/dots that are not canonical dotted quads: inet_aton-style forms
# ("127.1", "2130706433", "0x7f.0.0.1") that different resolvers interpret differently.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]*))*\.?$", re.IGNORECASE)


def _refuse(message: str, reason: str) -> FetchRefused:
    return FetchRefused(message, reason=reason)


async def _prepare_hop(url: URL, resolver: Resolver, allow_loopback_http: bool) -> PinnedTarget:
    """Validate one URL and resolve its host exactly once; return the pinned target."""
    scheme = (url.scheme or "").lower()
    if scheme not in ("https", "http"):
        raise _refuse(f"only https:// URLs can be fetched (got {scheme or 'no'} scheme)", "scheme")
    if scheme == "http" and not allow_loopback_http:
        raise _refuse("only https:// URLs can be fetched", "scheme")
    if url.user is not None or url.password is not None:
        raise _refuse("URLs containing a username or password are not allowed", "userinfo")
    host = url.raw_host
    if not host:
        raise _refuse("the URL has no host", "invalid_url")
    port = url.port
    if port is None or not 1 <= port <= 65535:
        raise _refuse(f"invalid port in URL: {port}", "port")
    if "%" in host:
        raise _refuse("IPv6 zone identifiers are not allowed in URLs", "invalid_url")

    literal: IPAddress | None
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None

    if literal is not None:
        resolved: list[IPAddress] = [literal]
        shown = str(literal)
    else:
        if _NUMERIC_HOST.match(host):
            raise _refuse(f"{host!r} is not a valid host name or canonical IP address", "invalid_url")
        try:
            answers = await resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise _refuse(f"could not resolve host {host!r}", "resolve") from exc
        try:
            resolved = [_parse_ip(a) for a in answers]
        except FetchRefused:
            raise _refuse(f"could not resolve host {host!r}", "resolve") from None
        if not resolved:
            raise _refuse(f"could not resolve host {host!r}", "resolve")
        shown = repr(host)

    # Every answer must pass, not just the one we would try first: aiohttp falls back to the next
    # address on connection failure, and an attacker controls which ones fail.
    for addr in resolved:
        label = classify_address(addr, allow_loopback=allow_loopback_http)
        if label is not None:
            if literal is None:
                message = f"refusing to fetch from host {shown}: it resolves to a forbidden address ({label})"
            else:
                message = f"refusing to fetch from {shown}: it is a forbidden address ({label})"
            raise _refuse(message, "forbidden_address")
    if scheme == "http" and not all(addr.is_loopback for addr in resolved):
        raise _refuse("only https:// URLs can be fetched (plain http is limited to loopback in tests)", "scheme")

    return PinnedTarget(
        url=url,
        scheme=scheme,
        hostname=host,
        port=port,
        addresses=tuple(dict.fromkeys(str(a) for a in resolved)),
    )


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FetchedFile:
    """A fetched body. ``content_type`` is the remote's claim (no parameters); do not trust it."""

    data: bytes
    content_type: str | None
    final_url: str


_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
CapForHead = Callable[[bytes], int]


def _parse_url(raw: str | URL) -> URL:
    try:
        url = raw if isinstance(raw, URL) else URL(raw)
    except (ValueError, TypeError, UnicodeError):
        raise _refuse("the URL is not valid", "invalid_url") from None
    scheme = (url.scheme or "").lower()
    if scheme and scheme not in ("https", "http"):
        # Checked before absoluteness so file:, data: and friends get the clearer message.
        raise _refuse(f"only https:// URLs can be fetched (got {scheme}:)", "scheme")
    if not url.is_absolute():
        raise _refuse("the URL must be absolute (https://host/path)", "invalid_url")
    return url.with_fragment(None)


def _too_large(limit: int) -> FetchRefused:
    return _refuse(f"the remote file is larger than the {_fmt_size(limit)} limit", "too_large")


def _fmt_size(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    return f"{n} bytes"


async def _read_capped(resp: aiohttp.ClientResponse, max_bytes: int, cap_for_head: CapForHead | None) -> bytes:
    limit = max_bytes
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit)
    buf = bytearray()
    head_checked = cap_for_head is None

    def apply_head_cap() -> None:
        nonlocal limit, head_checked
        head_checked = True
        assert cap_for_head is not None
        limit = min(limit, cap_for_head(bytes(buf[:SNIFF_BYTES])))
        if declared is not None and declared > limit:
            raise _too_large(limit)

    async for chunk in resp.content.iter_chunked(64 * 1024):
        buf += chunk
        if not head_checked and len(buf) >= SNIFF_BYTES:
            apply_head_cap()
        if len(buf) > limit:
            raise _too_large(limit)
    if not head_checked:
        apply_head_cap()
        if len(buf) > limit:
            raise _too_large(limit)
    return bytes(buf)


async def fetch_url(
    url: str | URL,
    *,
    max_bytes: int,
    total_timeout: float = DEFAULT_FETCH_TIMEOUT,
    resolver: Resolver | None = None,
    allow_loopback_http: bool = False,
    max_redirects: int = MAX_REDIRECTS,
    connector_factory: ConnectorFactory | None = None,
    ssl_context: ssl.SSLContext | None = None,
    cap_for_head: CapForHead | None = None,
) -> FetchedFile:
    """Fetch ``url`` under the SSRF policy described in the module docstring.

    * ``max_bytes``: refuse if ``Content-Length`` exceeds it, abort once the stream does.
    * ``total_timeout``: seconds for everything (all hops, DNS, connect, body).
    * ``resolver``: ``async (host, port) -> [ip, ...]``; default ``system_resolver``. Called once per hop.
    * ``connector_factory``: builds the aiohttp connector for a checked hop (default
      ``pinned_connector``). Tests pass a recorder here to assert no connection was attempted.
    * ``ssl_context``: ``ssl.SSLContext`` for verification (default: system trust store).
    * ``cap_for_head``: called once with the first ``SNIFF_BYTES`` of the body; returns a tighter
      cap (e.g. per media kind) or raises ``FetchRefused`` to stop downloading early.

    There is deliberately no way to pass in a shared ``aiohttp.ClientSession``: a session's
    connector resolves names itself, which would defeat the pinning. Each hop gets a fresh,
    pinned, single-use session (no cookies, no env proxies).

    Raises ``FetchRefused`` for every refusal or failure; nothing is returned partially.
    """
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    if max_redirects < 0:
        raise ValueError("max_redirects must be >= 0")
    try:
        async with asyncio.timeout(total_timeout):
            return await _fetch(
                _parse_url(url),
                max_bytes=max_bytes,
                resolver=resolver or system_resolver,
                allow_loopback_http=allow_loopback_http,
                max_redirects=max_redirects,
                connector_factory=connector_factory or pinned_connector,
                ssl_context=ssl_context,
                cap_for_head=cap_for_head,
            )
    except TimeoutError:
        raise _refuse(f"fetching the URL took longer than {total_timeout:g} seconds", "timeout") from None


async def _fetch(
    url: URL,
    *,
    max_bytes: int,
    resolver: Resolver,
    allow_loopback_http: bool,
    max_redirects: int,
    connector_factory: ConnectorFactory,
    ssl_context: ssl.SSLContext | None,
    cap_for_head: CapForHead | None,
) -> FetchedFile:
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        # Compressed transfer would make Content-Length meaningless for the cap; ask for identity.
        "Accept-Encoding": "identity",
    }
    ssl_param = ssl_context if ssl_context is not None else True
    redirects = 0
    while True:
        target = await _prepare_hop(url, resolver, allow_loopback_http)
        connector = connector_factory(target)
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector,
                    connector_owner=True,
                    trust_env=False,  # env proxies would connect somewhere we never checked
                    cookie_jar=aiohttp.DummyCookieJar(),
                    # Our asyncio.timeout governs the total; this only stops one dead address from
                    # eating the whole budget before aiohttp tries the next pinned one.
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                ) as session,
                session.get(url, headers=headers, allow_redirects=False, ssl=ssl_param) as resp,
            ):
                if resp.status in _REDIRECT_STATUSES:
                    location = resp.headers.get("Location")
                    if not location:
                        raise _refuse(f"the remote server sent a {resp.status} redirect without Location", "redirect")
                    if redirects >= max_redirects:
                        raise _refuse(f"too many redirects (more than {max_redirects})", "too_many_redirects")
                    try:
                        next_url = url.join(URL(location))
                    except (ValueError, TypeError, UnicodeError):
                        raise _refuse("the remote server sent an invalid redirect location", "redirect") from None
                    url = _parse_url(next_url)
                    redirects += 1
                    continue
                if not 200 <= resp.status < 300:
                    raise _refuse(f"the remote server answered HTTP {resp.status}", "upstream_status")
                data = await _read_capped(resp, max_bytes, cap_for_head)
                content_type = normalize_mime(resp.headers.get("Content-Type"))
                return FetchedFile(data=data, content_type=content_type, final_url=str(url))
        except aiohttp.ClientSSLError as exc:
            raise _refuse(f"TLS verification failed for host {target.hostname!r}", "tls") from exc
        except aiohttp.ClientConnectorError as exc:
            raise _refuse(f"could not connect to host {target.hostname!r}", "connect") from exc
        except aiohttp.ClientError as exc:
            raise _refuse(f"fetching from host {target.hostname!r} failed: {type(exc).__name__}", "connect") from exc


# --------------------------------------------------------------------------------------------
# Content sniffing
# --------------------------------------------------------------------------------------------


class Sniffed(NamedTuple):
    kind: MediaKind
    mime: str


_MIME_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/heif": "image/heic",
    "video/x-m4v": "video/mp4",
    "video/x-quicktime": "video/quicktime",
    "video/mkv": "video/x-matroska",
    "application/x-pdf": "application/pdf",
}

_KIND_BY_MIME: dict[str, MediaKind] = {
    "image/jpeg": MediaKind.IMAGE,
    "image/png": MediaKind.IMAGE,
    "image/webp": MediaKind.IMAGE,
    "image/heic": MediaKind.IMAGE,
    "image/avif": MediaKind.IMAGE,
    "image/gif": MediaKind.GIF,
    "video/mp4": MediaKind.VIDEO,
    "video/quicktime": MediaKind.VIDEO,
    "video/3gpp": MediaKind.VIDEO,
    "video/webm": MediaKind.VIDEO,
    "video/x-matroska": MediaKind.VIDEO,
    "application/pdf": MediaKind.DOCUMENT,
}

SUPPORTED_TYPES_TEXT = "JPEG, PNG, GIF, WebP, HEIC, AVIF, MP4, MOV, 3GP, WebM, MKV, PDF"

_HEIF_BRANDS = frozenset({"heic", "heix", "heim", "heis", "hevc", "hevx", "heif"})
_AVIF_BRANDS = frozenset({"avif", "avis"})
_HEIF_GENERIC = frozenset({"mif1", "msf1"})
_AUDIO_BRANDS = frozenset({"M4A ", "M4B ", "M4P ", "F4A ", "F4B "})


def normalize_mime(mime: str | None) -> str | None:
    """Lower-case, strip parameters and map common aliases (``image/jpg`` -> ``image/jpeg``)."""
    if not mime:
        return None
    base = mime.split(";", 1)[0].strip().lower()
    if not base:
        return None
    return _MIME_ALIASES.get(base, base)


def kind_for_mime(mime: str | None) -> MediaKind | None:
    """Kind for a supported MIME type; None if unsupported. ``image/gif`` maps to GIF here;
    ``probe`` later reports static GIFs as IMAGE."""
    norm = normalize_mime(mime)
    return _KIND_BY_MIME.get(norm) if norm else None


def _sniff_ftyp(data: bytes) -> Sniffed | None:
    box_size = int.from_bytes(data[0:4], "big")
    end = min(len(data), box_size if box_size >= 16 else 16, 256)
    major = data[8:12].decode("latin-1")
    brands = {data[i : i + 4].decode("latin-1") for i in range(16, end - 3, 4)}
    brands.add(major)
    if major in _AUDIO_BRANDS:
        return None
    if major in _AVIF_BRANDS or (major in _HEIF_GENERIC and brands & _AVIF_BRANDS):
        return Sniffed(MediaKind.IMAGE, "image/avif")
    if major in _HEIF_BRANDS or major in _HEIF_GENERIC:
        return Sniffed(MediaKind.IMAGE, "image/heic")
    if major == "qt  ":
        return Sniffed(MediaKind.VIDEO, "video/quicktime")
    if major.startswith("3g"):
        return Sniffed(MediaKind.VIDEO, "video/3gpp")
    return Sniffed(MediaKind.VIDEO, "video/mp4")


def sniff(data: bytes) -> Sniffed | None:
    """Identify supported media by magic bytes. Returns ``(kind, mime)`` or None if unsupported.

    Only the first ``SNIFF_BYTES`` matter. GIFs sniff as kind GIF whether or not they are
    animated; ``probe`` decides that. Audio-only MP4 brands (M4A...) are not media we publish.
    """
    if data.startswith(b"\xff\xd8\xff"):
        return Sniffed(MediaKind.IMAGE, "image/jpeg")
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed(MediaKind.IMAGE, "image/png")
    if data.startswith((b"GIF87a", b"GIF89a")):
        return Sniffed(MediaKind.GIF, "image/gif")
    if len(data) >= 12 and data[0:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Sniffed(MediaKind.IMAGE, "image/webp")
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return _sniff_ftyp(data)
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        # EBML header; the DocType element (0x4282) says webm or matroska.
        head = data[:SNIFF_BYTES]
        if b"\x42\x82\x84webm" in head:
            return Sniffed(MediaKind.VIDEO, "video/webm")
        return Sniffed(MediaKind.VIDEO, "video/x-matroska")
    if data.startswith(b"%PDF-"):
        return Sniffed(MediaKind.DOCUMENT, "application/pdf")
    return None


def _family(kind: MediaKind) -> MediaKind:
    # A client may call a GIF "image/png" or vice versa without lying about what it uploads.
    return MediaKind.IMAGE if kind is MediaKind.GIF else kind


def check_media(data: bytes, *, declared_mime: str | None = None, declared_size: int | None = None) -> Sniffed:
    """Validate bytes before storing them; return the sniffed ``(kind, mime)``.

    Raises ``MediaRejected`` (400) when the file is empty, differs from ``declared_size``, is not a
    supported type, is of a different kind than ``declared_mime`` says (an image declared as
    video), or exceeds its kind's cap. Within a kind the sniffed MIME wins over the declared one,
    because clients routinely mislabel JPEG/PNG or MP4/MOV. ``application/octet-stream`` counts
    as undeclared.
    """
    if not data:
        raise MediaRejected("the file is empty", reason="empty")
    if declared_size is not None and declared_size != len(data):
        raise MediaRejected(
            f"size mismatch: {declared_size} bytes were declared but {len(data)} were received",
            reason="size_mismatch",
        )
    found = sniff(data)
    if found is None:
        raise MediaRejected(
            f"unsupported or unrecognised file type (supported: {SUPPORTED_TYPES_TEXT})",
            reason="unsupported_type",
        )
    declared = normalize_mime(declared_mime)
    if declared and declared not in ("application/octet-stream", "binary/octet-stream"):
        declared_kind = kind_for_mime(declared)
        if declared_kind is None:
            raise MediaRejected(
                f"declared type {declared} is not supported (supported: {SUPPORTED_TYPES_TEXT})",
                reason="unsupported_type",
            )
        if _family(declared_kind) is not _family(found.kind):
            raise MediaRejected(
                f"type mismatch: declared {declared} but the content is {found.mime}", reason="type_mismatch"
            )
    cap = SIZE_CAPS[found.kind]
    if len(data) > cap:
        raise MediaRejected(
            f"the file is too large: {found.kind.value.lower()} files are limited to {_fmt_size(cap)}",
            reason="too_large",
        )
    return found


async def fetch_media(
    url: str | URL,
    *,
    total_timeout: float = DEFAULT_FETCH_TIMEOUT,
    resolver: Resolver | None = None,
    allow_loopback_http: bool = False,
    max_redirects: int = MAX_REDIRECTS,
    connector_factory: ConnectorFactory | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_bytes: int | None = None,
) -> tuple[FetchedFile, Sniffed]:
    """``fetch_url`` + ``check_media`` with the per-kind cap applied while streaming.

    The first bytes decide the kind, so a 500 MiB "PNG" is cut off at the image cap instead of the
    video cap, and unsupported content stops downloading immediately. The remote
    ``Content-Type`` is ignored for classification (CDNs send ``application/octet-stream``).
    ``max_bytes`` optionally tightens every cap.
    """
    ceiling = min(max_bytes, MAX_FETCH_BYTES) if max_bytes is not None else MAX_FETCH_BYTES

    def cap_for_head(head: bytes) -> int:
        found = sniff(head)
        if found is None:
            raise _refuse(
                f"the URL does not point to a supported media file (supported: {SUPPORTED_TYPES_TEXT})",
                "unsupported_type",
            )
        return min(ceiling, SIZE_CAPS[found.kind])

    fetched = await fetch_url(
        url,
        max_bytes=ceiling,
        total_timeout=total_timeout,
        resolver=resolver,
        allow_loopback_http=allow_loopback_http,
        max_redirects=max_redirects,
        connector_factory=connector_factory,
        ssl_context=ssl_context,
        cap_for_head=cap_for_head,
    )
    try:
        found = check_media(fetched.data)
    except MediaRejected as exc:
        raise FetchRefused(exc.message, reason=exc.reason) from None
    return fetched, found
