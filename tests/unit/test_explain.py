"""Grad-CAM on native-resolution crops, placed back where each crop lies on the full image."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from components.common.artifact import ArtifactConfig
from components.common.model import build_model
from components.common.model_config import ModelConfig
from components.common.settings import ImageLimits
from components.common.transforms import Preprocessing, image_crops, plan_crops
from serving.explain import explain_image, heatmap_png
from tests.helpers.images import encode


@pytest.mark.parametrize(
    ("size", "max_crops"),
    [
        ((320, 64), 2),  # a strip: two crops leave the middle unexplained
        ((64, 64), 4),  # exactly one crop: the whole image
        ((40, 30), 4),  # smaller than a crop: padded, the heatmap still has the image's size
    ],
)
def test_the_heatmap_covers_the_scored_crops_only_and_has_the_image_size(size: tuple[int, int], max_crops: int) -> None:
    torch.manual_seed(0)
    prep = Preprocessing(image_size=64, max_crops=max_crops)
    net = build_model(ModelConfig(preprocessing=prep)).eval()
    config = ArtifactConfig(net.config, 0.5, "test", temperature=2.0)
    data = encode("PNG", size=size, seed=3)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    probability, heat = explain_image(net, config, image, data, ImageLimits())
    assert heat.shape == (size[1], size[0])
    assert heat.min() >= 0
    assert heat.max() <= 1
    covered = np.zeros_like(heat, dtype=bool)
    for left, top in plan_crops(size[0], size[1], 64, max_crops, prep.crop_align):
        covered[top : top + 64, left : left + 64] = True
    assert not heat[~covered].any()  # nothing outside the crops the model scored
    with torch.inference_mode():
        mean_logit = float(net(torch.from_numpy(image_crops(image, prep))).mean())
    assert probability == pytest.approx(1 / (1 + np.exp(-mean_logit / 2.0)), abs=1e-5)  # the model's own score
    png = heatmap_png(image, heat)
    assert Image.open(io.BytesIO(png)).size == size
