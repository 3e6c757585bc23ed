"""Per-image features: they respond to what they claim to measure."""

import io

import numpy as np
from PIL import Image, ImageFilter

from components.common.features import FEATURE_NAMES, image_features
from components.common.images import decode_image
from components.common.settings import ImageLimits


def _features(img: Image.Image) -> dict[str, float]:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return image_features(decode_image(buf.getvalue(), ImageLimits()))


def _textured(size: int = 300) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_every_feature_is_reported_with_the_file_facts() -> None:
    features = _features(_textured(300))
    assert tuple(features) == FEATURE_NAMES
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
