"""Image decoding: accepted files, and every kind of bad file rejected with a reason and a useful message."""

import io

import pytest
from PIL import Image

from components.common.errors import InvalidImageError
from components.common.images import decode_image, probe_header
from components.common.settings import ImageLimits
from tests.helpers.images import encode, png_claiming

LIMITS = ImageLimits()


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (encode("JPEG", quality=90), "JPEG"),  # the common upload
        (encode("PNG"), "PNG"),  # lossless
        (encode("WEBP"), "WEBP"),  # lossy WebP
        (encode("PNG", mode="L"), "PNG"),  # greyscale becomes RGB
        (encode("PNG", mode="RGBA"), "PNG"),  # alpha is flattened
    ],
)
def test_accepted_images_decode_to_rgb(data: bytes, fmt: str) -> None:
    decoded = decode_image(data, LIMITS)
    assert decoded.format == fmt
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (64, 48) == (decoded.width, decoded.height)
    assert decoded.num_bytes == len(data)


@pytest.mark.parametrize(
    ("data", "reason", "says"),
    [
        (b"", "empty", "0 bytes"),  # zero bytes
        (b"hello, I am not an image", "not_an_image", "accepted formats: JPEG, PNG, WEBP"),  # text
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "not_an_image", "not a recognised image"),  # SVG
        (encode("GIF"), "unsupported_format", "GIF images are not accepted"),  # GIF
        (encode("TIFF"), "unsupported_format", "TIFF images are not accepted"),  # TIFF
        (encode("BMP"), "unsupported_format", "BMP images are not accepted"),  # BMP
        (encode("JPEG")[: len(encode("JPEG")) // 2], "corrupt", "truncated or corrupt"),  # JPEG cut in half
        (encode("PNG")[:-200], "corrupt", "truncated or corrupt"),  # PNG cut short
        (encode("PNG", size=(16, 16)), "too_small", "at least 32 pixels"),  # below the minimum side
        (png_claiming(7000, 7000), "too_many_pixels", "limit is 40000000 pixels"),  # over our limit
        (png_claiming(50000, 50000), "too_many_pixels", "too many pixels"),  # over Pillow's bomb limit too
    ],
)
def test_bad_images_are_rejected_with_reason(data: bytes, reason: str, says: str) -> None:
    with pytest.raises(InvalidImageError) as caught:
        decode_image(data, LIMITS)
    assert caught.value.reason == reason
    assert says in str(caught.value)


def test_byte_limit_is_checked_before_decoding() -> None:
    data = encode("PNG", size=(256, 256))
    with pytest.raises(InvalidImageError, match=f"is {len(data)} bytes; the limit is 1000 bytes") as caught:
        decode_image(data, ImageLimits(max_bytes=1000))
    assert caught.value.reason == "too_large"


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (80, 40), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes())
    decoded = decode_image(buf.getvalue(), LIMITS)
    assert decoded.image.size == (40, 80)
    assert (decoded.width, decoded.height) == (80, 40)  # the file's own size is reported unchanged


def test_transparent_pixels_become_white() -> None:
    img = Image.new("RGBA", (40, 40), (10, 20, 30, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert decode_image(buf.getvalue(), LIMITS).image.getpixel((5, 5)) == (255, 255, 255)


def test_draft_decoding_shrinks_large_jpeg_but_keeps_enough_pixels() -> None:
    data = encode("JPEG", size=(2000, 1200))
    decoded = decode_image(data, LIMITS, draft_size=256)
    assert 256 <= min(decoded.image.size) < 1200
    assert (decoded.width, decoded.height) == (2000, 1200)


def test_probe_header_reads_facts_of_any_image_and_none_of_garbage() -> None:
    header = probe_header(encode("GIF", size=(33, 44)))
    assert header is not None
    assert (header.format, header.width, header.height) == ("GIF", 33, 44)
    assert probe_header(b"garbage") is None
