"""Probing images (Pillow) and videos (PyAV) that the tests generate themselves."""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction

import av
import pytest
from PIL import Image

from postwright.media import probe as probe_module
from postwright.media.probe import ProbeError, probe, probe_async
from postwright.media.ssrf import MediaKind, MediaRejected, check_media


def _image(fmt: str, size: tuple[int, int] = (8, 6), **save: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(buf, format=fmt, **save)
    return buf.getvalue()


def _gif(frames: int, duration: int = 100) -> bytes:
    images = [Image.new("RGB", (10, 7), (i * 60 % 256, 0, 255 - i * 60 % 256)) for i in range(frames)]
    buf = io.BytesIO()
    if frames == 1:
        images[0].save(buf, format="GIF")
    else:
        images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return buf.getvalue()


def _video(
    *,
    container_format: str = "mp4",
    codec: str = "libx264",
    seconds: int = 1,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    audio: bool = False,
) -> bytes:
    """Encode a tiny synthetic clip in memory (solid frames, optional silent audio)."""
    buf = io.BytesIO()
    width, height = size
    with av.open(buf, mode="w", format=container_format) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        audio_stream = out.add_stream("aac", rate=48000) if audio else None
        for i in range(seconds * fps):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([(i * 25) % 256]) * plane.buffer_size)
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if audio_stream is not None:
            samples_per_frame = 1024
            for i in range(seconds * 48000 // samples_per_frame):
                chunk = av.AudioFrame(format="fltp", layout="mono", samples=samples_per_frame)
                for plane in chunk.planes:
                    plane.update(b"\x00" * plane.buffer_size)
                chunk.sample_rate = 48000
                chunk.pts = i * samples_per_frame
                out.mux(audio_stream.encode(chunk))
            out.mux(audio_stream.encode(None))
    return buf.getvalue()


@pytest.fixture(scope="module")
def mp4_bytes() -> bytes:
    return _video()


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_probe_still_images(fmt: str, mime: str) -> None:
    result = probe(_image(fmt, (12, 5)), mime)
    assert (result.kind, result.mime_type, result.width, result.height) == (MediaKind.IMAGE, mime, 12, 5)
    assert result.animated is False
    assert result.duration_ms is None
    assert result.frame_count == 1


def test_probe_animated_gif_is_kind_gif() -> None:
    result = probe(_gif(frames=3, duration=120), "image/gif")
    assert result.kind is MediaKind.GIF
    assert result.mime_type == "image/gif"
    assert (result.width, result.height) == (10, 7)
    assert result.animated is True
    assert result.frame_count == 3
    assert result.duration_ms == 360


def test_probe_static_gif_is_an_image() -> None:
    result = probe(_gif(frames=1), "image/gif")
    assert result.kind is MediaKind.IMAGE
    assert result.mime_type == "image/gif"
    assert result.animated is False


def test_probe_jpeg_exif_rotation_swaps_dimensions() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    result = probe(_image("JPEG", (40, 20), exif=exif.tobytes()), "image/jpeg")
    assert (result.width, result.height) == (20, 40)


def test_sniff_then_probe_agree(png_bytes: bytes) -> None:
    found = check_media(png_bytes)
    result = probe(png_bytes, found.mime)
    assert result.kind is found.kind


@pytest.mark.parametrize(
    ("data_factory", "mime"),
    [
        (lambda: _image("PNG")[:-20], "image/png"),  # truncated
        (lambda: _image("PNG")[:40], "image/png"),  # header only
        (lambda: _image("JPEG")[:-40], "image/jpeg"),  # truncated scan data
        (lambda: b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "image/png"),
        (lambda: _image("PNG"), "image/jpeg"),  # content does not match the declared type
        (lambda: _gif(3)[:60], "image/gif"),
    ],
)
def test_probe_corrupt_images(data_factory: Callable[[], bytes], mime: str) -> None:
    with pytest.raises(ProbeError) as info:
        probe(data_factory(), mime)
    assert "not a valid" in str(info.value)
    assert isinstance(info.value, MediaRejected)  # the API maps every MediaRejected to 400


def test_probe_refuses_images_over_the_pixel_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_module, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ProbeError) as info:
        probe(_image("PNG", (11, 10)), "image/png")
    assert info.value.reason == "too_large"
    probe(_image("PNG", (10, 10)), "image/png")


def test_probe_heic_is_refused_clearly() -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(ProbeError) as info:
        probe(heic, "image/heic")
    assert "HEIC" in str(info.value)


def test_probe_unknown_mime() -> None:
    with pytest.raises(ProbeError) as info:
        probe(b"hello", "text/plain")
    assert info.value.reason == "unsupported_type"


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------


def test_probe_one_second_mp4(mp4_bytes: bytes) -> None:
    found = check_media(mp4_bytes)
    assert found.mime == "video/mp4"
    result = probe(mp4_bytes, found.mime)
    assert result.kind is MediaKind.VIDEO
    assert result.mime_type == "video/mp4"
    assert (result.width, result.height) == (64, 48)
    assert result.codec == "h264"
    assert result.fps == pytest.approx(10)
    assert result.duration_ms is not None and 900 <= result.duration_ms <= 1100
    assert result.audio_codec is None


def test_probe_mp4_with_audio() -> None:
    data = _video(audio=True, size=(32, 64))
    result = probe(data, "video/mp4")
    assert result.audio_codec == "aac"
    assert (result.width, result.height) == (32, 64)


def test_probe_webm() -> None:
    data = _video(container_format="webm", codec="libvpx-vp9", size=(32, 32))
    found = check_media(data)
    assert found.mime == "video/webm"
    result = probe(data, found.mime)
    assert result.codec == "vp9"
    assert result.duration_ms is not None and 900 <= result.duration_ms <= 1100


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d[: len(d) // 3],  # truncated
        lambda d: d[:32],  # ftyp only
        lambda d: d[:8] + b"\xff" * (len(d) - 8),  # garbage after the header
    ],
)
def test_probe_corrupt_video(mp4_bytes: bytes, mangle: Callable[[bytes], bytes]) -> None:
    with pytest.raises(ProbeError):
        probe(mangle(mp4_bytes), "video/mp4")


def test_probe_video_demuxer_is_forced_by_mime(mp4_bytes: bytes) -> None:
    # An MP4 claimed to be WebM is not auto-detected by FFmpeg: only the matroska demuxer may run.
    with pytest.raises(ProbeError):
        probe(mp4_bytes, "video/webm")


async def test_probe_async(mp4_bytes: bytes) -> None:
    result = await probe_async(mp4_bytes, "video/mp4")
    assert result.kind is MediaKind.VIDEO


# --------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------

MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


def test_probe_pdf() -> None:
    result = probe(MINIMAL_PDF, "application/pdf")
    assert (result.kind, result.mime_type) == (MediaKind.DOCUMENT, "application/pdf")


def test_probe_truncated_pdf() -> None:
    with pytest.raises(ProbeError) as info:
        probe(MINIMAL_PDF[:-8], "application/pdf")
    assert "truncated" in str(info.value)
