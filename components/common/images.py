"""Bytes -> RGB image, with the limits that keep hostile or broken uploads out.

Every image the platform touches (ingest, validate, training, serving) goes through ``decode_image``, so a
file that serving would reject never reaches training either.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from components.common.errors import InvalidImageError
from components.common.settings import ImageLimits

# Pillow warns of images above its decompression-bomb threshold; our own pixel limit (ImageLimits.max_pixels), checked
# on every header, is the one that answers. Installed once, here: catching warnings around every image
# (warnings.catch_warnings) resets Python's once-per-place memory of all warnings, which printed every other warning
# of the model server (a FastAPI deprecation in KServe) again on every request.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

# Truncated files must fail, never be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class ImageHeader:
    """What the file says about itself, read without decoding pixels."""

    format: str
    width: int
    height: int


@dataclass(frozen=True)
class DecodedImage:
    """A decoded RGB image with the facts about the file it came from (size before any draft scaling)."""

    image: Image.Image
    format: str
    width: int
    height: int
    num_bytes: int
    jpeg_quality: float | None = None  # estimated from the luminance quantization table (JPEG only)
    has_exif: bool = False


def _accepted(limits: ImageLimits) -> str:
    return ", ".join(limits.formats)


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    if not data:
        raise InvalidImageError(f"the image is empty (0 bytes); send a {_accepted(limits)} file", reason="empty")
    if len(data) > limits.max_bytes:
        raise InvalidImageError(
            f"the image is {len(data)} bytes; the limit is {limits.max_bytes} bytes", reason="too_large"
        )
    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(
            f"the image declares too many pixels ({exc}); the limit is {limits.max_pixels} pixels",
            reason="too_many_pixels",
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(
            f"the data is not a recognised image; accepted formats: {_accepted(limits)}", reason="not_an_image"
        ) from exc


def _check_header(img: Image.Image, limits: ImageLimits) -> ImageHeader:
    fmt = img.format or "unknown"
    if fmt not in limits.formats:
        raise InvalidImageError(
            f"{fmt} images are not accepted; accepted formats: {_accepted(limits)}", reason="unsupported_format"
        )
    width, height = img.size
    if width * height > limits.max_pixels:
        raise InvalidImageError(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels} pixels",
            reason="too_many_pixels",
        )
    if min(width, height) < limits.min_side:
        raise InvalidImageError(
            f"the image is {width}x{height}; each side must be at least {limits.min_side} pixels",
            reason="too_small",
        )
    return ImageHeader(format=fmt, width=width, height=height)


def probe_header(data: bytes) -> ImageHeader | None:
    """Format and size from the file header without limits or pixel decoding; None when unidentifiable.

    Ingest records these facts for every file, good or bad, so that validate can name the bad ones.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            return ImageHeader(format=img.format or "unknown", width=img.size[0], height=img.size[1])
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError):
        return None


def decode_image(data: bytes, limits: ImageLimits, draft_size: int | None = None) -> DecodedImage:
    """Decode ``data`` into an RGB image: limits checked, EXIF orientation applied, alpha flattened onto white.

    ``draft_size`` lets JPEG decode at a reduced scale whose shorter side is still at least that many pixels
    (much faster for large photos). Training and serving pass the same value, so both see the same pixels.

    Raises:
        InvalidImageError: empty, too large, not an image, unsupported format, too many or too few pixels,
            truncated or corrupt.
    """
    img = _open(data, limits)
    header = _check_header(img, limits)
    quality = estimate_jpeg_quality(getattr(img, "quantization", None)) if header.format == "JPEG" else None
    has_exif = bool(img.info.get("exif"))
    try:
        if draft_size is not None and header.format == "JPEG":
            # Ask for a box at least draft_size on the shorter side; Pillow picks the largest reduction that fits.
            scale = draft_size / min(header.width, header.height)
            img.draft("RGB", (max(1, round(header.width * scale)), max(1, round(header.height * scale))))
        img.load()
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        rgb = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidImageError(
            f"the {header.format} image is truncated or corrupt ({exc}); send a complete {_accepted(limits)} file",
            reason="corrupt",
        ) from exc
    return DecodedImage(
        image=rgb,
        format=header.format,
        width=header.width,
        height=header.height,
        num_bytes=len(data),
        jpeg_quality=quality,
        has_exif=has_exif,
    )


# The IJG (libjpeg) standard luminance quantization table, in natural order, scaled by quality when encoding.
_IJG_LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip


def estimate_jpeg_quality(tables: dict[int, Any] | None) -> float | None:
    """The IJG quality (1-100) whose scaled luminance table best matches the file's, or None without tables.

    Encoders scale the standard table by ``s = 5000 / q`` (q < 50) or ``200 - 2 q`` percent; inverting the mean
    scale recovers q for libjpeg-family encoders and gives a comparable figure for others.
    """
    if not tables or 0 not in tables:
        return None
    table = list(tables[0])
    if len(table) != 64:
        return None
    scale = sum(100.0 * q / ref for q, ref in zip(table, _IJG_LUMINANCE, strict=True)) / 64  # same order as Pillow
    quality = (200.0 - scale) / 2 if scale <= 100 else 5000.0 / scale
    return float(min(100.0, max(1.0, quality)))
