"""Per-image features: the one function used for the drift reference at registration, by the payload sink and
by the drift job, so that reference and live statistics are always computed the same way."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from components.common.images import DecodedImage

FEATURE_NAMES = (
    "width",
    "height",
    "bytes",
    "brightness",
    "contrast",
    "saturation",
    "sharpness",
    "colourfulness",
    "jpeg_quality",
    "exif",
)
CATEGORICAL_FEATURES = ("format",)
_ANALYSIS_SIDE = 256  # features are measured on a copy no larger than this, so cost is bounded per image


def image_features(decoded: DecodedImage) -> dict[str, float | str]:
    """Facts of the file plus colour and detail statistics of its pixels (floats, 0-1 where relative).

    brightness: mean luminance; contrast: luminance standard deviation; saturation: mean HSV saturation;
    sharpness: mean absolute Laplacian-like edge response of the luminance (detail / blur indicator);
    colourfulness: Hasler and Suesstrunk's metric on 0-1 RGB; jpeg_quality: the estimated IJG quality (NaN when
    not a JPEG); exif: 1 when the file carries EXIF metadata; format: JPEG, PNG or WEBP.
    """
    img = decoded.image
    if max(img.size) > _ANALYSIS_SIDE:
        img = img.copy()
        img.thumbnail((_ANALYSIS_SIDE, _ANALYSIS_SIDE), Image.Resampling.BILINEAR)
    grey = img.convert("L")
    luminance = np.asarray(grey, dtype=np.float32) / 255.0
    saturation = np.asarray(img.convert("HSV"), dtype=np.float32)[..., 1] / 255.0
    edges = np.asarray(grey.filter(ImageFilter.FIND_EDGES), dtype=np.float32) / 255.0
    rgb = np.asarray(img, dtype=np.float32) / 255.0
    rg, yb = rgb[..., 0] - rgb[..., 1], (rgb[..., 0] + rgb[..., 1]) / 2 - rgb[..., 2]
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    return {
        "width": float(decoded.width),
        "height": float(decoded.height),
        "bytes": float(decoded.num_bytes),
        "brightness": float(luminance.mean()),
        "contrast": float(luminance.std()),
        "saturation": float(saturation.mean()),
        "sharpness": float(edges.mean()),
        "colourfulness": float(colourfulness),
        "jpeg_quality": float("nan") if decoded.jpeg_quality is None else decoded.jpeg_quality,
        "exif": float(decoded.has_exif),
        "format": decoded.format,
    }
