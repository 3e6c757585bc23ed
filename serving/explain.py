"""Grad-CAM: which regions of an image drove the detector's score, as a heatmap PNG of the image's size.

Native-resolution models are explained crop by crop, the crops the model scores: each crop's class activation map
is placed back where the crop lies on the full image (overlaps averaged, padding dropped), and the maps share one
scale, so a crop with stronger evidence shows hotter than a weak one. Resize-mode models (older artifacts) have one
centre crop whose map is stretched over the image, as before.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from components.common.artifact import ArtifactConfig
from components.common.model import Detector
from components.common.settings import ImageLimits
from components.common.transforms import image_crops, load_image, plan_crops


def grad_cam(net: Detector, crops: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(logit per crop, raw class activation maps (n, h, w) of the last feature map, >= 0) for crops (n, C, H, W)."""
    with torch.enable_grad():
        features = net.backbone.forward_features(crops)  # type: ignore[operator]
        features.retain_grad()
        logits = net.head(net.backbone.forward_head(features, pre_logits=True)).reshape(-1)  # type: ignore[operator]
        logits.sum().backward()
    weights = features.grad.mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * features).sum(dim=1)).detach().numpy()
    net.zero_grad(set_to_none=True)
    return logits.detach().numpy(), cams


def _upsampled(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))


def explain_image(
    net: Detector, config: ArtifactConfig, image: Image.Image, data: bytes, limits: ImageLimits
) -> tuple[float, np.ndarray]:
    """(calibrated probability, heatmap in [0, 1] of ``image``'s size (H, W)) for the decoded ``image`` of ``data``.

    The probability is the model's own (the crops' mean logit, the artifact's temperature); the torch weights
    compute it, so it may differ from a served fp32 runtime's by float rounding only.
    """
    prep = config.model.preprocessing
    net.eval()
    if prep.mode == "resize":
        logits, cams = grad_cam(net, torch.from_numpy(image_crops(load_image(data, limits, prep), prep)))
        heat = _upsampled(cams[0], image.size)
    else:
        logits, cams = grad_cam(net, torch.from_numpy(image_crops(image, prep)))
        total = np.zeros((image.height, image.width), dtype=np.float32)
        count = np.zeros_like(total)
        size = prep.image_size
        offsets = plan_crops(image.width, image.height, size, prep.max_crops, prep.crop_align)
        for (left, top), cam in zip(offsets, cams, strict=True):
            window = _upsampled(cam, (size, size))[: image.height - top, : image.width - left]  # padding dropped
            total[top : top + window.shape[0], left : left + window.shape[1]] += window
            count[top : top + window.shape[0], left : left + window.shape[1]] += 1
        heat = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else heat
    probability = float(config.probabilities(np.array([float(np.mean(logits))]))[0])
    return probability, heat


def heatmap_png(image: Image.Image, heat: np.ndarray, alpha: float = 0.5) -> bytes:
    """The heatmap (blue = no influence, red = strongest) resized to the image and blended over it, as PNG."""
    level = _upsampled(heat, image.size) if heat.shape != (image.height, image.width) else heat
    level = np.clip(level, 0, 1)[..., None]
    colour = np.concatenate([level, np.zeros_like(level), 1 - level], axis=-1) * 255
    blended = (1 - alpha) * np.asarray(image.convert("RGB"), dtype=np.float32) + alpha * colour
    buf = io.BytesIO()
    Image.fromarray(blended.clip(0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
