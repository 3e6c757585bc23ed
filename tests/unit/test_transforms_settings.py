"""Preprocessing, settings and seeding."""

import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from components.common.seeding import seed_everything
from components.common.settings import Settings, SplitSettings
from components.common.transforms import Preprocessing, eval_transform, load_image, train_transform
from tests.conftest import encode


def test_eval_transform_is_deterministic_and_normalised() -> None:
    prep = Preprocessing(image_size=64)
    img = Image.new("RGB", (100, 80), (255, 0, 128))
    first, second = eval_transform(prep)(img), eval_transform(prep)(img)
    assert first.shape == (3, 64, 64)
    assert torch.equal(first, second)
    # mean = std = 0.5 maps [0, 1] to [-1, 1]
    assert first[0].max().item() == pytest.approx(1.0)
    assert first[1].min().item() == pytest.approx(-1.0)


def test_train_transform_varies_with_the_seed_and_keeps_the_shape() -> None:
    prep = Preprocessing(image_size=32)
    img = load_image(encode("JPEG", size=(90, 70)), Settings().images, prep)
    seed_everything(1)
    a = train_transform(prep)(img)
    seed_everything(1)
    b = train_transform(prep)(img)
    seed_everything(2)
    c = train_transform(prep)(img)
    assert a.shape == (3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_preprocessing_round_trips_and_refuses_missing_fields() -> None:
    prep = Preprocessing(image_size=128, mean=(0.1, 0.2, 0.3))
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    partial = prep.to_dict()
    del partial["std"]
    with pytest.raises(ValueError, match="missing"):
        Preprocessing.from_dict(partial)


def test_settings_read_nested_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APD_IMAGES__MAX_BYTES", "1234")
    monkeypatch.setenv("APD_VALIDATION__MIN_IMAGES_PER_SPLIT", "3")
    settings = Settings()
    assert settings.images.max_bytes == 1234
    assert settings.validation.min_images_per_split == 3


def test_split_fractions_must_add_up() -> None:
    with pytest.raises(ValidationError, match="add up to 1"):
        SplitSettings(train=0.8, val=0.15, test=0.15)
