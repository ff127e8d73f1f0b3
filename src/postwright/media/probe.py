"""Reading dimensions, duration and codecs out of media files, and refusing corrupt ones.

This module decides:

* **Which decoder may touch the bytes.** The MIME type (from ``ssrf.sniff``/``check_media``)
  selects exactly one Pillow plugin or one FFmpeg demuxer. Nothing is auto-detected: Pillow's
  EPS plugin shells out to Ghostscript and FFmpeg's HLS/concat demuxers open other files and
  URLs, so letting a crafted upload choose its own parser would be an SSRF/RCE surface.
* **What counts as valid.** Images must decode their first frame; videos must contain a video
  stream whose first frame decodes; PDFs must start with ``%PDF-`` and end with ``%%EOF``.
  Anything else raises ``ProbeError`` with a message fit for a 400 response.
* **Kinds.** An animated GIF is kind GIF; a single-frame GIF is an IMAGE (platforms treat it as
  a still). Animated PNG/WebP stay IMAGE with ``animated=True``.
* **Dimensions are as displayed**: JPEG EXIF orientations 5-8 and video rotations of +-90 degrees
  swap width and height, because platform aspect-ratio rules apply to what viewers see.
* **Pixel ceiling**: images above ``MAX_IMAGE_PIXELS`` (100 MP) are refused before decoding, so a
  tiny file cannot expand into gigabytes of RAM.

``probe`` is CPU-bound and blocking; async code must use ``probe_async``.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from fractions import Fraction

from PIL import Image, UnidentifiedImageError

from postwright.media.ssrf import MediaKind, MediaRejected, kind_for_mime, normalize_mime

__all__ = ["MAX_IMAGE_PIXELS", "ProbeError", "ProbeResult", "probe", "probe_async"]

MAX_IMAGE_PIXELS = 100_000_000

# MIME type -> the single Pillow plugin allowed to open it.
_PILLOW_FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/avif": "AVIF",
    "image/heic": "HEIF",
}
_PILLOW_MIME = {fmt: mime for mime, fmt in _PILLOW_FORMATS.items()}

# MIME type -> the single FFmpeg demuxer allowed to open it ("mov" covers MP4/MOV/3GP,
# "matroska" covers WebM/MKV).
_DEMUXERS = {
    "video/mp4": "mov",
    "video/quicktime": "mov",
    "video/3gpp": "mov",
    "video/webm": "matroska",
    "video/x-matroska": "matroska",
}

_EXIF_ORIENTATION = 0x0112


class ProbeError(MediaRejected):
    """The file is corrupt, truncated, unsupported or exceeds a decoding limit (HTTP 400)."""

    def __init__(self, message: str, *, reason: str = "corrupt") -> None:
        super().__init__(message, reason=reason)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What we learned about a media file. Unknown values are None."""

    kind: MediaKind
    mime_type: str
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    fps: float | None = None
    codec: str | None = None  # video codec (e.g. "h264"); None for images and documents
    audio_codec: str | None = None
    animated: bool = False
    frame_count: int | None = None  # images only; videos would need a full decode to count


def probe(data: bytes, mime: str) -> ProbeResult:
    """Probe ``data``, which ``sniff``/``check_media`` identified as ``mime``. Raises ``ProbeError``."""
    norm = normalize_mime(mime)
    kind = kind_for_mime(norm)
    if norm is None or kind is None:
        raise ProbeError(f"unsupported media type: {mime}", reason="unsupported_type")
    if not data:
        raise ProbeError("the file is empty", reason="empty")
    if kind in (MediaKind.IMAGE, MediaKind.GIF):
        return _probe_image(data, norm)
    if kind is MediaKind.VIDEO:
        return _probe_video(data, norm)
    return _probe_document(data, norm)


async def probe_async(data: bytes, mime: str) -> ProbeResult:
    """``probe`` in a worker thread, so decoding never blocks the event loop."""
    return await asyncio.to_thread(probe, data, mime)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def _probe_image(data: bytes, mime: str) -> ProbeResult:
    Image.init()
    fmt = _PILLOW_FORMATS.get(mime)
    if fmt is None or fmt not in Image.OPEN:
        label = "HEIC" if mime == "image/heic" else mime
        raise ProbeError(
            f"{label} images are not supported by this server; convert to JPEG or PNG",
            reason="unsupported_type",
        )
    try:
        # verify() walks the container structure (chunk CRCs, IEND for PNG) that decoding
        # tolerates; it leaves the image unusable, hence the second open.
        with Image.open(io.BytesIO(data), formats=[fmt]) as checked:
            checked.verify()
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ProbeError("the image has no pixels")
            if width * height > MAX_IMAGE_PIXELS:
                raise ProbeError(
                    f"the image is too large: {width}x{height} exceeds {MAX_IMAGE_PIXELS // 1_000_000} megapixels",
                    reason="too_large",
                )
            frame_count = int(getattr(img, "n_frames", 1) or 1)
            animated = bool(getattr(img, "is_animated", False)) and frame_count > 1
            orientation = img.getexif().get(_EXIF_ORIENTATION) if fmt == "JPEG" else None
            # Decoding the first frame is what catches truncated/corrupt files; headers alone
            # parse fine on most broken uploads.
            img.load()
            duration_ms = _animation_duration(img, frame_count) if animated else None
    except ProbeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ProbeError(f"the image is too large to decode: {exc}", reason="too_large") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise ProbeError(f"the file is not a valid {fmt} image ({_short(exc)})") from None

    if orientation in (5, 6, 7, 8):
        width, height = height, width
    kind = MediaKind.GIF if fmt == "GIF" and animated else MediaKind.IMAGE
    return ProbeResult(
        kind=kind,
        mime_type=_PILLOW_MIME[fmt],
        width=width,
        height=height,
        duration_ms=duration_ms,
        animated=animated,
        frame_count=frame_count,
    )


def _animation_duration(img: Image.Image, frame_count: int) -> int | None:
    """Sum of per-frame durations (ms); seeking decodes every frame, which also validates them."""
    total = 0
    for index in range(frame_count):
        img.seek(index)
        total += int(img.info.get("duration", 0) or 0)
    img.seek(0)
    return total or None


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------


def _probe_video(data: bytes, mime: str) -> ProbeResult:
    import av

    demuxer = _DEMUXERS.get(mime)
    if demuxer is None:
        raise ProbeError(f"unsupported video type: {mime}", reason="unsupported_type")
    try:
        with av.open(io.BytesIO(data), mode="r", format=demuxer) as container:
            if not container.streams.video:
                raise ProbeError("the file contains no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            codec = ctx.name or None
            width, height = int(ctx.width or 0), int(ctx.height or 0)
            rate = stream.average_rate or stream.guessed_rate
            fps = round(float(rate), 3) if rate else None
            duration_ms = _video_duration_ms(container.duration, stream.duration, stream.time_base)
            audio_codec = container.streams.audio[0].codec_context.name if container.streams.audio else None

            frame = next(container.decode(stream), None)
            if frame is None:
                raise ProbeError("the video stream has no decodable frames")
            width, height = width or frame.width, height or frame.height
            rotation = int(getattr(frame, "rotation", 0) or 0)
    except ProbeError:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError, StopIteration) as exc:
        raise ProbeError(f"the file is not a valid {mime} video ({_short(exc)})") from None

    if width <= 0 or height <= 0:
        raise ProbeError("the video has no dimensions")
    if abs(rotation) % 180 == 90:
        width, height = height, width
    return ProbeResult(
        kind=MediaKind.VIDEO,
        mime_type=mime,
        width=width,
        height=height,
        duration_ms=duration_ms,
        fps=fps,
        codec=codec,
        audio_codec=audio_codec,
    )


def _video_duration_ms(
    container_duration: int | None, stream_duration: int | None, time_base: Fraction | None
) -> int | None:
    # Container duration is in AV_TIME_BASE (microseconds); prefer it, it spans all streams.
    if container_duration and container_duration > 0:
        return round(container_duration / 1000)
    if stream_duration and time_base:
        return round(float(stream_duration * time_base) * 1000)
    return None


# --------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------


def _probe_document(data: bytes, mime: str) -> ProbeResult:
    if mime != "application/pdf" or not data.startswith(b"%PDF-"):
        raise ProbeError("the file is not a valid PDF document")
    # Incremental updates append after the first %%EOF, so only the tail matters; some writers
    # add trailing whitespace or NULs, hence the window rather than endswith.
    if b"%%EOF" not in data[-2048:]:
        raise ProbeError("the PDF document is truncated (no %%EOF marker)")
    return ProbeResult(kind=MediaKind.DOCUMENT, mime_type=mime)


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
