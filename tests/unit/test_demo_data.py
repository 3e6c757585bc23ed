"""The offline demo dataset builder, on a tiny real build (3 photos, 2 crops each, 64 px)."""

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.common.demo_data import (
    DEFAULT_MIX,
    GENERATORS,
    LISTING_LONG_SIDE,
    MIX,
    TwinMaker,
    build_demo_dataset,
    crop_boxes,
    find_photos,
    listing_photo,
    recipe_of,
)
from components.common.images import estimate_jpeg_quality

SEED = 42
TINY = {"max_photos": 3, "crops_per_photo": 2, "crop_size": 64}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.jpg"))}


def _quality(path: Path) -> int:
    with Image.open(path) as img:
        quality = estimate_jpeg_quality(img.quantization)  # type: ignore[attr-defined]
    assert quality is not None
    return round(quality)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    build_demo_dataset(out, seed=SEED, **TINY)
    return out


@pytest.fixture(scope="module")
def twin_maker() -> TwinMaker:
    return TwinMaker()


def test_curated_photos_are_found_offline() -> None:
    photos = find_photos()
    assert len(photos) >= 30  # bundled scikit-image / scikit-learn photos + Debian wallpaper photos
    assert len({p.photo_id for p in photos}) == len(photos)
    assert {"scikit-image", "scikit-learn", "mate-backgrounds"} <= {p.package for p in photos}


def test_layout_pairs_and_splits_by_photo(tiny: Path) -> None:
    files = sorted(p.relative_to(tiny) for p in tiny.rglob("*.jpg"))
    assert len(files) == 3 * 2 * 2
    real = {(f.parts[0], f.name) for f in files if f.parts[1] == "real" and len(f.parts) == 3}
    fake = {(f.parts[0], f.name) for f in files if f.parts[1] == "ai_generated" and len(f.parts) == 4}
    assert real == fake  # every real crop has its generated twin, in the same split, under its recipe's folder
    assert {f.parts[2] for f in files if f.parts[1] == "ai_generated"} <= set(DEFAULT_MIX)
    split_of_photo: dict[str, set[str]] = {}
    for split, name in real:
        split_of_photo.setdefault(name.rsplit("_", 1)[0], set()).add(split)
    assert all(len(splits) == 1 for splits in split_of_photo.values())
    assert {s for splits in split_of_photo.values() for s in splits} == {"train", "val", "test"}
    for real_path in (tiny / split / "real" / name for split, name in real):
        [twin_path] = real_path.parent.parent.glob(f"ai_generated/*/{real_path.name}")
        with Image.open(real_path) as a, Image.open(twin_path) as b:
            assert a.size == b.size == (64, 64)
            assert a.format == b.format == "JPEG"
            assert a.mode == b.mode == "RGB"
            assert a.tobytes() != b.tobytes()
            assert not a.getexif()
            assert not b.getexif()
            assert a.quantization == b.quantization  # the pair shares its JPEG quality
        assert 75 <= _quality(real_path) <= 95
    sources = (tiny / "SOURCES.md").read_text()
    assert "| skimage-astronaut |" in sources
    assert "listing size" in sources


def test_real_crops_are_windows_of_the_listing_size_photo_never_resampled(tiny: Path) -> None:
    for photo in find_photos()[:3]:
        image = listing_photo(photo.load(), photo.photo_id, SEED)
        for k, box in enumerate(crop_boxes(image.size, photo.photo_id, SEED, 2, 64)):
            [path] = tiny.glob(f"*/real/{photo.photo_id}_{k}.jpg")
            buf = io.BytesIO()
            image.crop(box).save(buf, format="JPEG", quality=_quality(path))
            assert buf.getvalue() == path.read_bytes()  # the same window, the same encoder: the same bytes


def test_listing_size_is_drawn_per_photo_and_only_downscales() -> None:
    photos = find_photos()
    small = next(p for p in photos if p.photo_id == "skimage-astronaut")  # 512 px: already small
    assert listing_photo(small.load(), small.photo_id, SEED).tobytes() == small.load().convert("RGB").tobytes()
    large = photos[-1]  # a Debian wallpaper, larger than any listing
    original = large.load()
    assert max(original.size) > LISTING_LONG_SIDE[1]
    sides = {max(listing_photo(original, large.photo_id, seed).size) for seed in range(4)}
    assert all(LISTING_LONG_SIDE[0] <= side <= LISTING_LONG_SIDE[1] for side in sides)
    assert len(sides) > 1  # drawn, not fixed
    resized = listing_photo(original, large.photo_id, SEED)
    assert resized.width / resized.height == pytest.approx(original.width / original.height, rel=0.01)


def test_crop_windows_do_not_depend_on_how_many_are_cut() -> None:
    assert crop_boxes((900, 700), "p", SEED, 5, 256)[:2] == crop_boxes((900, 700), "p", SEED, 2, 256)
    with pytest.raises(ValueError, match="smaller than crop_size"):
        crop_boxes((200, 300), "p", SEED, 1, 256)


@pytest.mark.parametrize("name", list(GENERATORS))  # every recipe, the held-out anime-2x included
def test_every_recipe_makes_a_twin_of_the_crops_size(twin_maker: TwinMaker, name: str) -> None:
    photo = find_photos()[0]
    image = listing_photo(photo.load(), photo.photo_id, SEED)
    crop = image.crop(crop_boxes(image.size, photo.photo_id, SEED, 1, 64)[0])
    twin = twin_maker(crop, GENERATORS[name])
    assert twin.size == crop.size
    assert twin.mode == "RGB"
    difference = np.abs(np.asarray(twin, dtype=np.int16) - np.asarray(crop, dtype=np.int16)).mean()
    assert 0 < difference < 40  # re-synthesised: not the crop's pixels, but the same picture


def test_the_mix_rotates_every_recipe_through_each_photo() -> None:
    assert "anime-2x" in GENERATORS
    assert set(DEFAULT_MIX) == set(GENERATORS) - {"anime-2x"}  # the drill's new generator is held out
    offsets = set()
    for photo_id in ("a", "b", "c", "d", "e", "f"):
        names = [recipe_of(photo_id, k, SEED, MIX).name for k in range(len(DEFAULT_MIX))]
        assert sorted(names) == sorted(DEFAULT_MIX)  # any len(DEFAULT_MIX) consecutive crops use each once
        offsets.add(names[0])
    assert len(offsets) > 1  # the rotation starts at a different recipe per photo
    assert {recipe_of("a", k, SEED, "anime-2x").name for k in range(8)} == {"anime-2x"}


def test_second_call_is_cached_and_builds_are_deterministic(tiny: Path, tmp_path: Path) -> None:
    again = build_demo_dataset(tiny, seed=SEED, **TINY)
    assert again.cached
    record = json.loads((tiny / "demo.json").read_text())
    assert again.images == record["images"] == 12
    assert sum(record["generators"].values()) == 6  # ai_generated images per recipe
    assert again.generators == record["generators"]
    fresh = build_demo_dataset(tmp_path / "other", seed=SEED, **TINY)
    assert not fresh.cached
    assert _digests(tmp_path / "other") == _digests(tiny)


def test_one_generator_makes_other_twins_of_fresh_crops(tiny: Path, tmp_path: Path) -> None:
    other = build_demo_dataset(tmp_path / "new", seed=SEED, **TINY, generator="anime-2x", first_crop=2).out_dir
    names = {p.relative_to(other) for p in other.rglob("*.jpg")}
    assert len(names) == 3 * 2 * 2
    assert all(int(p.stem.rsplit("_", 1)[1]) >= 2 for p in names)  # crops 2 and 3 of each photo, not 0 and 1
    assert {p.parts[2] for p in names if p.parts[1] == "ai_generated"} == {"anime-2x"}
    assert set(_digests(other).values()).isdisjoint(_digests(tiny).values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"generator": "dall-e"}, "unknown generator"),  # not a recipe
        ({"crop_size": 48}, "too small"),  # shrunk 4x, 12 px: below what the networks are given
        ({"crop_size": 96, "generator": "x4plus-4x"}, None),  # shrunk 4x: 24 px, accepted
        ({"jpeg_quality": (95, 75)}, "jpeg_quality"),  # an empty range
    ],
)
def test_bad_parameters_are_refused_before_any_work(
    tmp_path: Path, kwargs: dict[str, object], message: str | None
) -> None:
    if message is None:
        built = build_demo_dataset(tmp_path / "ok", **kwargs, max_photos=3, crops_per_photo=1)  # type: ignore[arg-type]
        assert built.generators == {"x4plus-4x": 3}
        return
    with pytest.raises(ValueError, match=message):
        build_demo_dataset(tmp_path / "bad", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "bad").exists()
