"""Fixtures for the media building blocks.

Network safety is enforced twice here: every fetch test passes a ``ConnectRecorder`` as the
connect step (it fails the test instead of connecting anywhere but loopback), and an autouse
guard patches ``socket.connect`` so that even a bug in the code under test cannot open a socket
to a non-loopback address.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from PIL import Image

from postwright.media.ssrf import PinnedTarget, pinned_connector

# The loopback-only socket guard lives in tests/conftest.py and covers these tests too.


# --------------------------------------------------------------------------------------------
# Connect recorder and resolvers
# --------------------------------------------------------------------------------------------


class _RerouteResolver(AbstractResolver):
    """Sends the one pinned hostname to 127.0.0.1:port: stands in for a public server."""

    def __init__(self, hostname: str, port: int) -> None:
        self._hostname = hostname
        self._port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        assert host.rstrip(".") == self._hostname.rstrip("."), host
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=self._port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        return None


@dataclass
class ConnectRecorder:
    """Replacement connect step. Records every hop that got as far as connecting.

    Loopback targets get the real pinned connector. Non-loopback targets fail the test, unless
    ``reroute_port`` is set, in which case the socket goes to that loopback port instead of the
    (public) address that was checked; nothing ever connects off-box.
    """

    reroute_port: int | None = None
    targets: list[PinnedTarget] = field(default_factory=list)

    def __call__(self, target: PinnedTarget) -> aiohttp.BaseConnector:
        self.targets.append(target)
        if all(ipaddress.ip_address(a).is_loopback for a in target.addresses):
            return pinned_connector(target)
        if self.reroute_port is None:
            raise AssertionError(f"connection attempted to non-loopback {target.addresses}")
        return aiohttp.TCPConnector(
            resolver=_RerouteResolver(target.hostname, self.reroute_port),
            use_dns_cache=False,
            force_close=True,
        )

    @property
    def addresses(self) -> list[tuple[str, ...]]:
        return [t.addresses for t in self.targets]


@pytest.fixture
def recorder() -> ConnectRecorder:
    return ConnectRecorder()


@pytest.fixture
def make_recorder() -> type[ConnectRecorder]:
    return ConnectRecorder


class MapResolver:
    """Injectable resolver: fixed answers per hostname; counts lookups. Never touches DNS."""

    def __init__(self, mapping: dict[str, Sequence[str]]) -> None:
        self.mapping = {k.lower(): list(v) for k, v in mapping.items()}
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        try:
            return list(self.mapping[host.lower()])
        except KeyError:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} not in test resolver") from None


@pytest.fixture
def make_resolver() -> Callable[[dict[str, Sequence[str]]], MapResolver]:
    return MapResolver


# --------------------------------------------------------------------------------------------
# Media generators
# --------------------------------------------------------------------------------------------


def make_png(width: int = 8, height: int = 6, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return make_png()


# --------------------------------------------------------------------------------------------
# TLS material (throwaway CA + leaf for "public.test")
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsMaterial:
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext
    hostname: str


def _make_tls(tmp: Path, hostname: str) -> TlsMaterial:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "postwright test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = tmp / "leaf.pem"
    key_path = tmp / "leaf.key"
    cert_path.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_path, key_path)
    client_ctx = ssl.create_default_context(cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    return TlsMaterial(server_context=server_ctx, client_context=client_ctx, hostname=hostname)


# --------------------------------------------------------------------------------------------
# Loopback test server (plain HTTP and HTTPS, same routes)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaServer:
    http_port: int
    https_port: int
    tls: TlsMaterial

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def _build_app(png: bytes) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/png")
    async def png_file(request: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    @routes.get("/text")
    async def text_file(request: web.Request) -> web.Response:
        return web.Response(text="hello, not media")

    @routes.get("/echo-host")
    async def echo_host(request: web.Request) -> web.Response:
        return web.Response(text=request.headers.get("Host", ""))

    @routes.get("/redirect")
    async def redirect(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        headers = {"Location": request.query["to"]} if "to" in request.query else {}
        return web.Response(status=status, headers=headers)

    @routes.get("/chain/{n}")
    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n <= 0:
            return web.Response(body=png, content_type="image/png")
        return web.Response(status=302, headers={"Location": f"/chain/{n - 1}"})

    @routes.get("/sized/{n}")
    async def sized(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        body = (png + b"\0" * n)[:n] if n >= len(png) else png[:n]
        if request.query.get("cl", "1") == "1":
            return web.Response(body=body, content_type="image/png")
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(body), 1000):
            await resp.write(body[i : i + 1000])
        await resp.write_eof()
        return resp

    @routes.get("/status/{code}")
    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="nope")

    @routes.get("/slow")
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(text="too late")

    @routes.get("/slow-body")
    async def slow_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(png)
        await asyncio.sleep(30)
        return resp

    app = web.Application()
    app.add_routes(routes)
    return app


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def media_server(tmp_path_factory: pytest.TempPathFactory, png_bytes: bytes) -> AsyncIterator[MediaServer]:
    tls = _make_tls(tmp_path_factory.mktemp("tls"), "public.test")
    # handler_cancellation: the /slow handlers must die when the client gives up, or teardown waits.
    runner = web.AppRunner(_build_app(png_bytes), handler_cancellation=True, shutdown_timeout=1)
    await runner.setup()
    http_site = web.TCPSite(runner, "127.0.0.1", 0)
    https_site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context)
    await http_site.start()
    await https_site.start()

    def port_of(site: web.TCPSite) -> int:
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    try:
        yield MediaServer(http_port=port_of(http_site), https_port=port_of(https_site), tls=tls)
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------------------------
# moto S3 server on loopback
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
