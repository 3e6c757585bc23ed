"""Per-image features: they respond to what they claim to measure."""

import io
import math
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from components.common.features import CATEGORICAL_FEATURES, FEATURE_NAMES, image_features
from components.common.images import decode_image
from components.common.settings import ImageLimits


def _features(img: Image.Image, **save: Any) -> dict[str, Any]:
    buf = io.BytesIO()
    img.save(buf, **({"format": "PNG"} | save))
    return image_features(decode_image(buf.getvalue(), ImageLimits()))


def _textured(size: int = 300) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_every_feature_is_reported_with_the_file_facts() -> None:
    features = _features(_textured(300))
    assert tuple(features) == FEATURE_NAMES + CATEGORICAL_FEATURES
    assert features["format"] == "PNG"
    assert math.isnan(features["jpeg_quality"])  # not a JPEG
    assert features["exif"] == 0
    assert (features["width"], features["height"]) == (300, 300)
    assert features["bytes"] > 0


def test_brightness_contrast_saturation_and_sharpness_move_the_right_way() -> None:
    grey_dark, grey_light = Image.new("RGB", (64, 64), (40, 40, 40)), Image.new("RGB", (64, 64), (220, 220, 220))
    assert _features(grey_dark)["brightness"] < _features(grey_light)["brightness"]
    assert _features(grey_dark)["contrast"] == 0
    assert _features(Image.new("RGB", (64, 64), (200, 20, 20)))["saturation"] > 0.8
    assert _features(grey_light)["saturation"] == 0
    sharp = _textured(128)
    assert _features(sharp)["sharpness"] > 2 * _features(sharp.filter(ImageFilter.GaussianBlur(3)))["sharpness"]


def test_colourfulness_jpeg_quality_and_exif() -> None:
    assert _features(Image.new("RGB", (64, 64), (128, 128, 128)))["colourfulness"] == 0
    stripes = Image.fromarray(np.repeat(np.array([[[250, 0, 0], [0, 0, 250]]], dtype=np.uint8), 32, axis=1))
    assert _features(stripes.resize((64, 64)))["colourfulness"] > 0.3
    photo = _textured(64)
    for quality in (40, 75, 92):  # libjpeg's own tables: the estimate lands on the quality used
        assert _features(photo, format="JPEG", quality=quality)["jpeg_quality"] == pytest.approx(quality, abs=1)
    exif = Image.Exif()
    exif[0x010F] = "Camera maker"
    assert _features(photo, format="JPEG", exif=exif)["exif"] == 1
    assert _features(photo, format="JPEG")["exif"] == 0
