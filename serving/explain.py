"""Grad-CAM: which regions of an image drove the detector's score, as a heatmap PNG of the image's size."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from components.common.model import Detector


def grad_cam(net: Detector, tensor: torch.Tensor) -> tuple[float, np.ndarray]:
    """(probability, heatmap in [0, 1] of the last feature map's size) for one preprocessed image (C, H, W)."""
    with torch.enable_grad():
        features = net.backbone.forward_features(tensor[None])  # type: ignore[operator]
        features.retain_grad()
        logit = net.head(net.backbone.forward_head(features, pre_logits=True))  # type: ignore[operator]
        logit.sum().backward()
    weights = features.grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * features).sum(dim=1))[0].detach()
    peak = float(cam.max())
    heat = (cam / peak).numpy() if peak > 0 else np.zeros(cam.shape, dtype=np.float32)
    net.zero_grad(set_to_none=True)
    return float(torch.sigmoid(logit.detach())[0]), heat


def heatmap_png(image: Image.Image, heat: np.ndarray, alpha: float = 0.5) -> bytes:
    """The heatmap (blue = no influence, red = strongest) resized to the image and blended over it, as PNG."""
    size = image.size
    level = np.asarray(Image.fromarray((heat * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR))
    level = level.astype(np.float32) / 255
    colour = np.stack([level, np.zeros_like(level), 1 - level], axis=-1) * 255
    blended = (1 - alpha) * np.asarray(image.convert("RGB"), dtype=np.float32) + alpha * colour
    buf = io.BytesIO()
    Image.fromarray(blended.clip(0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
