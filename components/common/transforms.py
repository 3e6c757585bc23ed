"""THE preprocessing: one definition shared by training, evaluation, the ONNX export and the model server.

Its parameters (``Preprocessing``) are saved inside every model artifact and read back from it; nothing
downstream falls back on defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from components.common.images import decode_image
from components.common.settings import ImageLimits


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model's input tensor."""

    image_size: int = 224  # side of the square crop the network sees
    crop_fraction: float = 0.875  # crop side / resized shorter side (resize to image_size / crop_fraction)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel mean; tf_efficientnet_lite* use 0.5
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel std
    interpolation: str = "bicubic"  # resize filter, a torchvision InterpolationMode value

    @property
    def resize_size(self) -> int:
        """Shorter side after resizing, before the centre crop."""
        return round(self.image_size / self.crop_fraction)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, stored in checkpoints and model artifacts."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Inverse of ``to_dict``; every field must be present (a model never loads with defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = names - data.keys()
        if missing:
            raise ValueError(f"preprocessing parameters are missing {sorted(missing)}")
        values = {name: data[name] for name in names}
        values["mean"] = tuple(values["mean"])
        values["std"] = tuple(values["std"])
        return cls(**values)


def _finish(prep: Preprocessing) -> list[Callable[[Any], Any]]:
    return [
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(prep.mean), std=list(prep.std)),
    ]


def eval_transform(prep: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """Deterministic resize + centre crop + normalise: evaluation, export and serving."""
    return v2.Compose(
        [
            v2.Resize(prep.resize_size, interpolation=InterpolationMode(prep.interpolation), antialias=True),
            v2.CenterCrop(prep.image_size),
            *_finish(prep),
        ]
    )


def train_transform(prep: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """Augmented variant for training: flip, colour jitter, and mostly native-scale crops.

    Generated images betray themselves in pixel-level texture, which every resampling blurs. So most samples keep
    the evaluation geometry (resize to ``resize_size``, then a random instead of a centre crop); a random resized
    crop and a rotation of +-15 degrees are each applied to a share of the samples only.
    """
    interpolation = InterpolationMode(prep.interpolation)
    return v2.Compose(
        [
            v2.Resize(prep.resize_size, interpolation=interpolation, antialias=True),
            v2.RandomChoice(
                [
                    v2.RandomCrop(prep.image_size),
                    v2.RandomResizedCrop(
                        prep.image_size, scale=(0.5, 1.0), interpolation=interpolation, antialias=True
                    ),
                ],
                p=[0.75, 0.25],
            ),
            v2.RandomApply([v2.RandomRotation(15, interpolation=InterpolationMode.BILINEAR)], p=0.25),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02),
            *_finish(prep),
        ]
    )


def load_image(data: bytes, limits: ImageLimits, prep: Preprocessing) -> Image.Image:
    """Decode ``data`` the way both training and serving do (JPEG draft-decoded to the resize size)."""
    return decode_image(data, limits, draft_size=prep.resize_size).image
