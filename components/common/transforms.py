"""THE preprocessing: one definition shared by training, evaluation, the ONNX export and the model server.

Its parameters (``Preprocessing``) are saved inside every model artifact and read back from it; nothing
downstream falls back on defaults.

Two modes:

- ``native`` (every model trained since the native-resolution redesign): the network never sees resampled
  pixels. An image is decoded at full resolution (no JPEG draft decoding) and scored on up to ``max_crops``
  square crops of ``image_size`` pixels, spread over the image by ``plan_crops`` (a deterministic grid, offsets on
  ``crop_align`` so that JPEG's 8x8 blocks line up alike in every crop); an image smaller than a crop is padded
  with the normalisation mean, never upscaled. The crops' logits are averaged (``aggregate``) into one per image.
- ``resize`` (older artifacts, read from their parameters): shorter side resized to ``image_size / crop_fraction``
  (JPEG draft-decoded to that size first), centre crop of ``image_size``; one crop per image.

Probabilities are ``sigmoid(mean logit / temperature)`` (``probabilities``); the temperature is fitted on
validation at evaluation and stored in the artifact's config. A model with an attribution head also gives, per
image, the mean over its crops of each crop's softmax over the generator recipes (``generator_probabilities``).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from components.common.images import decode_image
from components.common.settings import ImageLimits

# No torch here: the predictor preprocesses without it (numpy arrays); training turns the arrays into tensors.
MODES = ("native", "resize")
# Resize mode's filters by their torchvision InterpolationMode names, as torchvision resizes a PIL image: with PIL.
_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}
# Parameters that artifacts from before the native-resolution redesign do not carry, with the values that
# reproduce what those models did.
_LEGACY = {"mode": "resize", "max_crops": 1, "crop_align": 1}


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the model's input crops."""

    image_size: int = 128  # side of the square crop the network sees
    crop_fraction: float = 0.875  # resize mode: crop side / resized shorter side
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel mean; tf_efficientnet_lite* use 0.5
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel std
    interpolation: str = "bicubic"  # resize mode: resize filter, a torchvision InterpolationMode name
    mode: str = "native"  # native: crops at the decoded resolution; resize: the legacy resize + centre crop
    max_crops: int = 8  # native mode: most crops scored per image (K)
    crop_align: int = 16  # native mode: crop offsets are multiples of this (a JPEG MCU)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"preprocessing mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.max_crops < 1 or self.crop_align < 1 or self.image_size < 1:
            raise ValueError("image_size, max_crops and crop_align must be positive")
        if self.interpolation not in _RESAMPLING:
            raise ValueError(f"interpolation {self.interpolation!r}; expected one of {', '.join(_RESAMPLING)}")

    @property
    def resize_size(self) -> int:
        """Resize mode: shorter side after resizing, before the centre crop."""
        return round(self.image_size / self.crop_fraction)

    @property
    def draft_size(self) -> int | None:
        """JPEG draft decoding target (resize mode only; native mode decodes every pixel)."""
        return self.resize_size if self.mode == "resize" else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, stored in checkpoints and model artifacts."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Inverse of ``to_dict``; every field must be present (a model never loads with defaults), except the
        native-mode fields, which artifacts from before them lack: they get the values of the resize mode."""
        names = {f.name for f in dataclasses.fields(cls)}
        data = {**_LEGACY, **data} if "mode" not in data else data
        missing = names - data.keys()
        if missing:
            raise ValueError(f"preprocessing parameters are missing {sorted(missing)}")
        values = {name: data[name] for name in names}
        values["mean"] = tuple(values["mean"])
        values["std"] = tuple(values["std"])
        return cls(**values)


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation, applied alike to both classes (no class gets a look of its own)."""

    rescale_prob: float = 0.3  # share of images rescaled before cropping ...
    rescale_range: tuple[float, float] = (0.5, 1.5)  # ... by a factor drawn log-uniformly from this range
    blur_prob: float = 0.1  # share blurred with a Gaussian ...
    blur_sigma: tuple[float, float] = (0.3, 1.0)  # ... of this radius range (pixels)
    noise_prob: float = 0.1  # share with Gaussian noise added ...
    noise_std: tuple[float, float] = (1.0, 4.0)  # ... of this standard deviation range (grey levels)
    jpeg_prob: float = 0.3  # share re-compressed as JPEG ...
    jpeg_quality: tuple[int, int] = (60, 100)  # ... at a quality drawn from this range
    flip: bool = True  # horizontal flips

    @classmethod
    def off(cls) -> Augmentation:
        """No augmentation at all."""
        return cls(rescale_prob=0, blur_prob=0, noise_prob=0, jpeg_prob=0, flip=False)


def plan_crops(width: int, height: int, size: int, max_crops: int, align: int = 1) -> list[tuple[int, int]]:
    """(left, top) of up to ``max_crops`` square crops of ``size`` spread over a ``width`` x ``height`` image.

    Deterministic. When the whole image can be tiled with at most ``max_crops`` crops it is (full coverage);
    otherwise a grid of about the image's aspect ratio, each crop centred in its cell. Offsets are rounded down to
    multiples of ``align`` (and stay inside the image). A side shorter than ``size`` gets offset 0: the crop runs
    past the image there and is padded.
    """
    full_x, full_y = math.ceil(width / size), math.ceil(height / size)
    if full_x * full_y <= max_crops:
        cols, rows = full_x, full_y
    else:
        aspect = math.log(full_x / full_y)
        grids = [
            (nx * min(full_y, max_crops // nx), -abs(math.log(nx / min(full_y, max_crops // nx)) - aspect), nx)
            for nx in range(1, min(full_x, max_crops) + 1)
        ]
        _, _, cols = max(grids)
        rows = min(full_y, max_crops // cols)
    xs, ys = _offsets(width, size, cols, align), _offsets(height, size, rows, align)
    return [(x, y) for y in ys for x in xs]


def _offsets(length: int, size: int, count: int, align: int) -> list[int]:
    if length <= size:
        return [0]
    offsets = []
    for i in range(count):
        left = min(max(0, round((i + 0.5) * length / count - size / 2)), length - size)
        offsets.append(left // align * align)
    return sorted(set(offsets))


def _normalise(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 HWC (or NHWC) -> float32 CHW (NCHW): (pixel / 255 - mean) / std, in numpy (a torch version of the
    same took 30 ms for 8 crops here, this 0.1 ms)."""
    std = np.array(prep.std, dtype=np.float32).reshape(3, 1, 1)
    scale = np.float32(1 / 255) / std
    offset = np.array(prep.mean, dtype=np.float32).reshape(3, 1, 1) / std
    chw = np.moveaxis(pixels, -1, -3).astype(np.float32)
    chw *= scale
    chw -= offset
    return chw


def _pad_value(prep: Preprocessing) -> np.ndarray:
    """The pixel that normalises to 0: padding adds no signal of its own."""
    return np.clip(np.round(np.array(prep.mean) * 255), 0, 255).astype(np.uint8)


def cut(image: Image.Image, left: int, top: int, size: int, pad: np.ndarray) -> np.ndarray:
    """The ``size`` x ``size`` window at (left, top) of an RGB image as uint8 HWC, padded with ``pad`` where it
    runs past the image (only the window's pixels are copied out of the image)."""
    box = (left, top, min(left + size, image.width), min(top + size, image.height))
    window = np.asarray(image.crop(box))
    if window.shape[0] == size and window.shape[1] == size:
        return window
    out = np.empty((size, size, 3), dtype=np.uint8)
    out[:] = pad
    out[: window.shape[0], : window.shape[1]] = window
    return out


def image_crops(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """The crops the network scores for one image, normalised float32, shape (n, 3, S, S) with 1 <= n <= max_crops."""
    if prep.mode == "resize":
        return _resize_crop(image, prep)[None]
    image = image if image.mode == "RGB" else image.convert("RGB")
    size, pad = prep.image_size, _pad_value(prep)
    plan = plan_crops(image.width, image.height, size, prep.max_crops, prep.crop_align)
    return _normalise(np.stack([cut(image, x, y, size, pad) for x, y in plan]), prep)


def _resize_crop(image: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Resize mode: the shorter side resized to ``resize_size`` (the longer in proportion, truncated), the centred
    ``image_size`` square, normalised (CHW): what torchvision's Resize + CenterCrop + Normalize compute on a PIL
    image, which the models of that mode were trained with (a unit test holds the two equal)."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    short, long = min(width, height), max(width, height)
    new_long = int(prep.resize_size * long / short)
    size = (prep.resize_size, new_long) if width <= height else (new_long, prep.resize_size)
    if size != image.size:
        image = image.resize(size, _RESAMPLING[prep.interpolation])
    crop = prep.image_size
    left, top = round((image.width - crop) / 2.0), round((image.height - crop) / 2.0)
    return _normalise(cut(image, left, top, crop, np.zeros(3, dtype=np.uint8)), prep)


def jpeg_roundtrip(image: Image.Image, quality: int) -> Image.Image:
    """The image as a JPEG of ``quality`` would decode (augmentation, robustness copies)."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def augment(image: Image.Image, aug: Augmentation, rng: random.Random) -> Image.Image:
    """The photometric and geometric augmentation of one training image (before cropping)."""
    if rng.random() < aug.rescale_prob:
        low, high = aug.rescale_range
        factor = math.exp(rng.uniform(math.log(low), math.log(high)))
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(size, Image.Resampling.BICUBIC if factor > 1 else Image.Resampling.LANCZOS)
    if rng.random() < aug.blur_prob:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*aug.blur_sigma)))
    if rng.random() < aug.noise_prob:
        pixels = np.asarray(image, dtype=np.float32)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(*aug.noise_std), pixels.shape)
        image = Image.fromarray(np.clip(pixels + noise, 0, 255).round().astype(np.uint8))
    if rng.random() < aug.jpeg_prob:
        image = jpeg_roundtrip(image, rng.randint(*aug.jpeg_quality))
    if aug.flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def train_transform(prep: Preprocessing, aug: Augmentation) -> Callable[[Image.Image], np.ndarray]:
    """Native mode, training: ``augment``, then one random crop of ``image_size`` at the (augmented) image's own
    resolution, padded where the image is smaller. Random state comes from Python's ``random`` (in training seeded
    per image from (seed, epoch, index) by ``common.distributed.SeededRows``)."""
    if prep.mode != "native":
        raise ValueError("training uses the native mode; resize-mode models can be served and evaluated only")
    pad = _pad_value(prep)

    def transform(image: Image.Image) -> np.ndarray:
        rng = random.Random(random.getrandbits(64))  # noqa: S311 (augmentation, not cryptography)
        augmented = augment(image.convert("RGB"), aug, rng)
        size = prep.image_size
        left = rng.randint(0, max(0, augmented.width - size))
        top = rng.randint(0, max(0, augmented.height - size))
        return _normalise(cut(augmented, left, top, size, pad), prep)

    return transform


def aggregate(logits: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """One logit per image: the mean of its crops' logits (``counts`` crops per image, in order)."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    if sum(counts) != len(logits):
        raise ValueError(f"{len(logits)} crop logits for {sum(counts)} crops")
    bounds = np.cumsum([0, *counts])
    return np.array([logits[a:b].mean() for a, b in itertools.pairwise(bounds)])


def generator_probabilities(generator_logits: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Per image, the probability of each generator recipe (n_images, G): the mean over its crops of each crop's
    softmax (``counts`` crops per image, in order; G may be 0)."""
    logits = np.asarray(generator_logits, dtype=np.float64)
    if sum(counts) != len(logits):
        raise ValueError(f"{len(logits)} crop generator logits for {sum(counts)} crops")
    if logits.shape[1] == 0:
        return np.zeros((len(counts), 0), dtype=np.float32)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax = exp / exp.sum(axis=1, keepdims=True)
    bounds = np.cumsum([0, *counts])
    return np.array([softmax[a:b].mean(axis=0) for a, b in itertools.pairwise(bounds)], dtype=np.float32)


def probabilities(image_logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities that each image is AI-generated: sigmoid(logit / temperature)."""
    scaled = np.asarray(image_logits, dtype=np.float64) / temperature
    return np.asarray(1 / (1 + np.exp(-scaled)), dtype=np.float32)


def load_image(data: bytes, limits: ImageLimits, prep: Preprocessing) -> Image.Image:
    """Decode ``data`` the way both training and serving do (every pixel in native mode; JPEG draft-decoded to
    the resize size in the legacy resize mode)."""
    return decode_image(data, limits, draft_size=prep.draft_size).image
