"""Per-image features: the one function used for the drift reference at registration, by the payload sink and
by the drift job, so that reference and live statistics are always computed the same way."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from components.common.images import DecodedImage

FEATURE_NAMES = ("width", "height", "bytes", "brightness", "contrast", "saturation", "sharpness")
_ANALYSIS_SIDE = 256  # features are measured on a copy no larger than this, so cost is bounded per image


def image_features(decoded: DecodedImage) -> dict[str, float]:
    """Size facts of the file plus colour and detail statistics of its pixels (all floats, 0-1 where relative).

    brightness: mean luminance; contrast: luminance standard deviation; saturation: mean HSV saturation;
    sharpness: mean absolute Laplacian-like edge response of the luminance (detail / blur indicator).
    """
    img = decoded.image
    if max(img.size) > _ANALYSIS_SIDE:
        img = img.copy()
        img.thumbnail((_ANALYSIS_SIDE, _ANALYSIS_SIDE), Image.Resampling.BILINEAR)
    grey = img.convert("L")
    luminance = np.asarray(grey, dtype=np.float32) / 255.0
    saturation = np.asarray(img.convert("HSV"), dtype=np.float32)[..., 1] / 255.0
    edges = np.asarray(grey.filter(ImageFilter.FIND_EDGES), dtype=np.float32) / 255.0
    return {
        "width": float(decoded.width),
        "height": float(decoded.height),
        "bytes": float(decoded.num_bytes),
        "brightness": float(luminance.mean()),
        "contrast": float(luminance.std()),
        "saturation": float(saturation.mean()),
        "sharpness": float(edges.mean()),
    }
