"""The offline demo dataset builder, on a tiny real build (3 photos, 1 crop each, 64 px)."""

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from components.common.demo_data import build_demo_dataset, find_photos

TINY = {"max_photos": 3, "crops_per_photo": 2, "crop_size": 64}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.jpg"))}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    build_demo_dataset(out, **TINY)
    return out


def test_curated_photos_are_found_offline() -> None:
    photos = find_photos()
    assert len(photos) >= 30  # bundled scikit-image / scikit-learn photos + Debian wallpaper photos
    assert len({p.photo_id for p in photos}) == len(photos)
    assert {"scikit-image", "scikit-learn", "mate-backgrounds"} <= {p.package for p in photos}


def test_layout_pairs_and_splits_by_photo(tiny: Path) -> None:
    files = sorted(p.relative_to(tiny) for p in tiny.rglob("*.jpg"))
    assert len(files) == 3 * 2 * 2
    real = {(f.parts[0], f.name) for f in files if f.parts[1] == "real"}
    fake = {(f.parts[0], f.name) for f in files if f.parts[1] == "ai_generated"}
    assert real == fake  # every real crop has its generated twin, in the same split
    split_of_photo: dict[str, set[str]] = {}
    for split, name in real:
        split_of_photo.setdefault(name.rsplit("_", 1)[0], set()).add(split)
    assert all(len(splits) == 1 for splits in split_of_photo.values())
    assert {s for splits in split_of_photo.values() for s in splits} == {"train", "val", "test"}
    for split, name in real:
        with Image.open(tiny / split / "real" / name) as a, Image.open(tiny / split / "ai_generated" / name) as b:
            assert a.size == b.size == (64, 64)
            assert a.format == b.format == "JPEG"
            assert a.tobytes() != b.tobytes()
            assert not a.getexif()
            assert not b.getexif()
    assert "| skimage-astronaut |" in (tiny / "SOURCES.md").read_text()


def test_second_call_is_cached_and_builds_are_deterministic(tiny: Path, tmp_path: Path) -> None:
    again = build_demo_dataset(tiny, **TINY)
    assert again.cached
    assert again.images == json.loads((tiny / "demo.json").read_text())["images"] == 12
    fresh = build_demo_dataset(tmp_path / "other", **TINY)
    assert not fresh.cached
    assert _digests(tmp_path / "other") == _digests(tiny)


def test_crop_size_must_suit_the_generator(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        build_demo_dataset(tmp_path / "x", crop_size=66)


def test_another_generator_makes_other_twins_of_fresh_crops(tiny: Path, tmp_path: Path) -> None:
    other = build_demo_dataset(tmp_path / "new", **TINY, generator="anime-2x", first_crop=2).out_dir
    names = {p.relative_to(other) for p in other.rglob("*.jpg")}
    assert len(names) == 3 * 2 * 2
    assert all(int(p.stem.rsplit("_", 1)[1]) >= 2 for p in names)  # crops 2 and 3 of each photo, not 0 and 1
    assert set(_digests(other).values()).isdisjoint(_digests(tiny).values())
    with Image.open(next((other / "train" / "ai_generated").glob("*.jpg"))) as img:
        assert img.size == (64, 64)  # generated at 2x the crop's size, downsampled back
    with pytest.raises(ValueError, match="unknown generator"):
        build_demo_dataset(tmp_path / "bad", **TINY, generator="dall-e")
