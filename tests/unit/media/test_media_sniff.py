"""Magic-byte sniffing and pre-storage validation (check_media)."""

from __future__ import annotations

import pytest

from postwright.media.ssrf import (
    SIZE_CAPS,
    MediaKind,
    MediaRejected,
    Sniffed,
    check_media,
    kind_for_mime,
    normalize_mime,
    sniff,
)


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x02\x00" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00\x00\x00\x08free"


SNIFF_TABLE: list[tuple[str, bytes, Sniffed | None]] = [
    ("jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", Sniffed(MediaKind.IMAGE, "image/jpeg")),
    ("jpeg-exif", b"\xff\xd8\xff\xe1\x00\x10Exif\x00", Sniffed(MediaKind.IMAGE, "image/jpeg")),
    ("png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", Sniffed(MediaKind.IMAGE, "image/png")),
    ("gif87", b"GIF87a\x01\x00\x01\x00", Sniffed(MediaKind.GIF, "image/gif")),
    ("gif89", b"GIF89a\x01\x00\x01\x00", Sniffed(MediaKind.GIF, "image/gif")),
    ("webp", b"RIFF\x24\x00\x00\x00WEBPVP8 ", Sniffed(MediaKind.IMAGE, "image/webp")),
    ("heic", _ftyp(b"heic", b"mif1", b"heic"), Sniffed(MediaKind.IMAGE, "image/heic")),
    ("heif-mif1", _ftyp(b"mif1", b"mif1", b"heic"), Sniffed(MediaKind.IMAGE, "image/heic")),
    ("avif", _ftyp(b"avif", b"avif", b"mif1", b"miaf"), Sniffed(MediaKind.IMAGE, "image/avif")),
    ("avif-mif1", _ftyp(b"mif1", b"avif", b"miaf"), Sniffed(MediaKind.IMAGE, "image/avif")),
    ("mp4-isom", _ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), Sniffed(MediaKind.VIDEO, "video/mp4")),
    ("mp4-mp42", _ftyp(b"mp42", b"mp42", b"isom"), Sniffed(MediaKind.VIDEO, "video/mp4")),
    ("m4v", _ftyp(b"M4V ", b"M4V ", b"mp42"), Sniffed(MediaKind.VIDEO, "video/mp4")),
    ("mov", _ftyp(b"qt  ", b"qt  "), Sniffed(MediaKind.VIDEO, "video/quicktime")),
    ("3gp", _ftyp(b"3gp4", b"isom"), Sniffed(MediaKind.VIDEO, "video/3gpp")),
    ("m4a-audio", _ftyp(b"M4A ", b"M4A ", b"mp42"), None),
    (
        "webm",
        b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm",
        Sniffed(MediaKind.VIDEO, "video/webm"),
    ),
    (
        "mkv",
        b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x88matroska",
        Sniffed(MediaKind.VIDEO, "video/x-matroska"),
    ),
    ("pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", Sniffed(MediaKind.DOCUMENT, "application/pdf")),
    ("html", b"<!doctype html><html>", None),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', None),
    ("zip", b"PK\x03\x04\x14\x00", None),
    ("bmp", b"BM\x36\x00\x00\x00", None),
    ("avi", b"RIFF\x24\x00\x00\x00AVI LIST", None),
    ("truncated-jpeg-magic", b"\xff\xd8", None),
    ("empty", b"", None),
]


@pytest.mark.parametrize(("name", "data", "expected"), SNIFF_TABLE, ids=[row[0] for row in SNIFF_TABLE])
def test_sniff_table(name: str, data: bytes, expected: Sniffed | None) -> None:
    assert sniff(data) == expected


def test_sniff_result_is_a_tuple() -> None:
    kind, mime = sniff(b"GIF89a....")  # type: ignore[misc]
    assert (kind, mime) == (MediaKind.GIF, "image/gif")


@pytest.mark.parametrize(
    ("mime", "normalized", "kind"),
    [
        ("image/JPG", "image/jpeg", MediaKind.IMAGE),
        ("image/png; charset=binary", "image/png", MediaKind.IMAGE),
        ("image/gif", "image/gif", MediaKind.GIF),
        ("video/x-m4v", "video/mp4", MediaKind.VIDEO),
        ("application/pdf", "application/pdf", MediaKind.DOCUMENT),
        ("text/html", "text/html", None),
        ("", None, None),
        (None, None, None),
    ],
)
def test_mime_helpers(mime: str | None, normalized: str | None, kind: MediaKind | None) -> None:
    assert normalize_mime(mime) == normalized
    assert kind_for_mime(mime) == kind


PNG_HEAD = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
MP4_HEAD = _ftyp(b"isom", b"isom") + b"\x00" * 100


def test_check_media_accepts_matching_declarations(png_bytes: bytes) -> None:
    assert check_media(png_bytes, declared_mime="image/png", declared_size=len(png_bytes)) == Sniffed(
        MediaKind.IMAGE, "image/png"
    )
    # Same family, different label: the sniffed type wins.
    assert check_media(png_bytes, declared_mime="image/jpeg").mime == "image/png"
    assert check_media(png_bytes, declared_mime="image/gif").mime == "image/png"
    # Undeclared or octet-stream: sniffing alone decides.
    assert check_media(png_bytes).mime == "image/png"
    assert check_media(png_bytes, declared_mime="application/octet-stream").mime == "image/png"


@pytest.mark.parametrize(
    ("data", "declared_mime", "declared_size", "reason"),
    [
        (b"", None, None, "empty"),
        (PNG_HEAD, "image/png", len(PNG_HEAD) + 1, "size_mismatch"),
        (PNG_HEAD, "image/png", len(PNG_HEAD) - 1, "size_mismatch"),
        (PNG_HEAD, "video/mp4", None, "type_mismatch"),
        (MP4_HEAD, "image/png", None, "type_mismatch"),
        (MP4_HEAD, "application/pdf", None, "type_mismatch"),
        (PNG_HEAD, "text/html", None, "unsupported_type"),
        (b"<html></html>", "image/png", None, "unsupported_type"),
        (b"#!/bin/sh\nrm -rf /\n", None, None, "unsupported_type"),
    ],
)
def test_check_media_refusals(data: bytes, declared_mime: str | None, declared_size: int | None, reason: str) -> None:
    with pytest.raises(MediaRejected) as info:
        check_media(data, declared_mime=declared_mime, declared_size=declared_size)
    assert info.value.reason == reason
    assert str(info.value)


@pytest.mark.parametrize(("kind", "head"), [(MediaKind.GIF, b"GIF89a"), (MediaKind.IMAGE, b"\xff\xd8\xff")])
def test_check_media_per_kind_size_caps(kind: MediaKind, head: bytes) -> None:
    cap = SIZE_CAPS[kind]
    check_media(head + b"\x00" * (cap - len(head)))
    with pytest.raises(MediaRejected) as info:
        check_media(head + b"\x00" * (cap - len(head) + 1))
    assert info.value.reason == "too_large"
    assert "MiB" in str(info.value)


def test_caps_are_ordered_sensibly() -> None:
    assert SIZE_CAPS[MediaKind.GIF] < SIZE_CAPS[MediaKind.IMAGE] < SIZE_CAPS[MediaKind.DOCUMENT]
    assert SIZE_CAPS[MediaKind.DOCUMENT] < SIZE_CAPS[MediaKind.VIDEO]
