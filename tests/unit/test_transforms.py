"""Preprocessing (``components.common.transforms``): crop planning, native and resize crops, training
augmentation (seeded), aggregation of crop logits and calibrated probabilities."""

import numpy as np
import pytest
import torch
from PIL import Image

from components.common.seeding import seed_everything
from components.common.settings import Settings
from components.common.transforms import (
    Augmentation,
    Preprocessing,
    aggregate,
    image_crops,
    load_image,
    plan_crops,
    probabilities,
    train_transform,
)
from tests.helpers.images import encode


@pytest.mark.parametrize(
    ("width", "height", "size", "max_crops", "expected"),
    [
        (60, 40, 128, 8, [(0, 0)]),  # tiny: one crop at the origin, padded on both sides
        (128, 128, 128, 8, [(0, 0)]),  # exactly one crop
        (256, 256, 128, 8, [(0, 0), (128, 0), (0, 128), (128, 128)]),  # tiled completely: 4 <= 8
        (300, 128, 128, 8, [(0, 0), (80, 0), (160, 0)]),  # tiled, offsets on 16, the last one inside the image
        (4000, 600, 128, 8, [(x, 224) for x in (176, 672, 1184, 1680, 2176, 2672, 3184, 3680)]),  # panorama: a row
        (4000, 3000, 128, 8, [(x, y) for y in (672, 2176) for x in (432, 1424, 2432, 3424)]),  # 12 MP: 4 x 2 grid
        (4000, 3000, 128, 1, [(1936, 1424)]),  # K = 1: the centre
        (1633, 1225, 128, 4, [(336, 240), (1152, 240), (336, 848), (1152, 848)]),  # 2 MP, K = 4: 2 x 2
    ],
)
def test_crop_planner(width: int, height: int, size: int, max_crops: int, expected: list[tuple[int, int]]) -> None:
    plan = plan_crops(width, height, size, max_crops, align=16)
    assert plan == expected
    assert plan == plan_crops(width, height, size, max_crops, align=16)  # deterministic
    assert len(plan) <= max_crops
    for x, y in plan:
        assert x % 16 == 0
        assert y % 16 == 0
        assert x + size <= max(width, size)
        assert y + size <= max(height, size)


def test_native_crops_keep_the_pixels_and_pad_small_images_with_the_mean() -> None:
    prep = Preprocessing(image_size=32, max_crops=4)
    pixels = np.random.default_rng(0).integers(0, 256, size=(40, 70, 3), dtype=np.uint8)
    crops = image_crops(Image.fromarray(pixels), prep)
    assert crops.shape == (2, 3, 32, 32)  # 3 x 2 would tile it; within 4 crops, a 2 x 1 grid of its aspect
    left, top = plan_crops(70, 40, 32, 4, 16)[0]
    window = torch.from_numpy(pixels[top : top + 32, left : left + 32]).permute(2, 0, 1).float() / 255
    assert torch.allclose(torch.from_numpy(crops[0]), (window - 0.5) / 0.5, atol=1e-6)  # the pixels, normalised
    tiny = image_crops(Image.fromarray(pixels[:20, :25]), prep)
    assert tiny.shape == (1, 3, 32, 32)
    assert float(np.abs(tiny[0, :, 20:, :]).max()) < 0.01  # padding normalises to ~0 (the mean grey)
    assert float(np.abs(tiny[0, :, :, 25:]).max()) < 0.01


def _torchvision_resize_crop(prep: Preprocessing, image: Image.Image) -> torch.Tensor:
    """What the resize-mode models were trained with: torchvision's Resize + CenterCrop + Normalize."""
    from torchvision.transforms import InterpolationMode, v2

    transform = v2.Compose(
        [
            v2.Resize(prep.resize_size, interpolation=InterpolationMode(prep.interpolation), antialias=True),
            v2.CenterCrop(prep.image_size),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(prep.mean), std=list(prep.std)),
        ]
    )
    return transform(image)


@pytest.mark.parametrize("size", [(100, 80), (80, 100), (73, 73), (640, 191), (75, 300)])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "lanczos", "nearest"])
def test_resize_mode_is_torchvisions_resize_and_centre_crop(size: tuple[int, int], interpolation: str) -> None:
    """The predictor computes it without torch, in PIL and numpy: the same pixels as torchvision's."""
    prep = Preprocessing(image_size=64, mode="resize", max_crops=1, crop_align=1, interpolation=interpolation)
    img = Image.fromarray(np.random.default_rng(sum(size)).integers(0, 256, size=(*size[::-1], 3), dtype=np.uint8))
    crops = image_crops(img, prep)
    assert crops.shape == (1, 3, 64, 64)
    assert crops.dtype == np.float32
    np.testing.assert_allclose(crops[0], _torchvision_resize_crop(prep, img).numpy(), atol=1e-6)


def test_resize_mode_normalises_and_drafts() -> None:
    prep = Preprocessing(image_size=64, mode="resize", max_crops=1, crop_align=1)
    crops = image_crops(Image.new("RGB", (100, 80), (255, 0, 128)), prep)
    assert crops[0, 0].max() == pytest.approx(1.0)  # mean = std = 0.5 maps [0, 1] to [-1, 1]
    assert prep.draft_size == round(64 / 0.875)
    assert Preprocessing().draft_size is None  # native mode decodes every pixel


def test_train_transform_varies_with_the_seed_and_keeps_the_shape() -> None:
    prep = Preprocessing(image_size=32)
    img = load_image(encode("JPEG", size=(90, 70)), Settings().images, prep)
    transform = train_transform(prep, Augmentation(rescale_prob=1, blur_prob=1, noise_prob=1, jpeg_prob=1))
    seed_everything(1)
    a = transform(img)
    seed_everything(1)
    b = transform(img)
    seed_everything(2)
    c = transform(img)
    assert a.shape == (3, 32, 32)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="native"):
        train_transform(Preprocessing(mode="resize"), Augmentation())


def test_without_augmentation_training_sees_native_pixels() -> None:
    prep = Preprocessing(image_size=32)
    pixels = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    crop = train_transform(prep, Augmentation.off())(Image.fromarray(pixels))
    assert np.array_equal(crop, image_crops(Image.fromarray(pixels), prep)[0])


@pytest.mark.parametrize(
    ("logits", "counts", "expected"),
    [
        ([1.0, 3.0, -2.0], [2, 1], [2.0, -2.0]),  # mean logit per image
        ([0.5], [1], [0.5]),  # one crop
        ([1.0, -1.0, 4.0, 0.0, 2.0], [2, 3], [0.0, 2.0]),  # images with different numbers of crops
    ],
)
def test_aggregation_is_the_mean_logit_of_each_images_crops(
    logits: list[float], counts: list[int], expected: list[float]
) -> None:
    assert aggregate(np.array(logits), counts) == pytest.approx(expected)


def test_aggregation_refuses_a_mismatch() -> None:
    with pytest.raises(ValueError, match="3 crop logits for 4 crops"):
        aggregate(np.zeros(3), [2, 2])


@pytest.mark.parametrize(
    ("logit", "temperature", "expected"),
    [(0.0, 2.0, 0.5), (2.0, 1.0, 0.8807971), (2.0, 2.0, 0.7310586), (-4.0, 0.5, 0.00033535)],
)
def test_probabilities_apply_the_temperature(logit: float, temperature: float, expected: float) -> None:
    assert float(probabilities(np.array([logit]), temperature)[0]) == pytest.approx(expected, rel=1e-5)


def test_preprocessing_round_trips_and_refuses_missing_fields() -> None:
    prep = Preprocessing(image_size=128, mean=(0.1, 0.2, 0.3), max_crops=5)
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    partial = prep.to_dict()
    del partial["std"]
    with pytest.raises(ValueError, match="missing"):
        Preprocessing.from_dict(partial)
    with pytest.raises(ValueError, match="mode"):
        Preprocessing(mode="stretch")


def test_artifacts_from_before_native_crops_keep_their_resize_preprocessing() -> None:
    legacy = {
        "image_size": 224,
        "crop_fraction": 0.875,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "interpolation": "bicubic",
    }
    prep = Preprocessing.from_dict(legacy)
    assert (prep.mode, prep.max_crops, prep.resize_size) == ("resize", 1, 256)
