"""Ingest from real folders and Parquet files: layouts, splits, duplicates, caching, bad sources."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from components.common.dataset import read_manifest
from components.common.errors import DataSourceError
from components.common.settings import Settings
from components.ingest import IngestResult, _classify, ingest_dataset
from tests.conftest import MakeTree
from tests.helpers.images import encode


def _ingest(settings: Settings, source: Path | str, out: Path, **kw: str | bool) -> IngestResult:
    return ingest_dataset(str(source), out, settings.data_dir / "cache", settings.splits, settings.s3, **kw)


def test_class_folders_become_a_manifest_with_hash_splits(
    make_tree: MakeTree, settings: Settings, tmp_path: Path
) -> None:
    src = make_tree({"real": 30, "ai_generated": 30})
    result = _ingest(settings, src, tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    assert result.summary.num_images == len(manifest) == 60
    assert set(manifest["label"]) == {"real", "ai_generated"}
    assert set(manifest["split"]) <= {"train", "val", "test"}
    assert (manifest["format"] == "PNG").all()
    assert (manifest[["width", "height"]] == 48).all().all()
    for row in manifest.itertuples():
        stored = tmp_path / "out" / row.path
        assert stored.stat().st_size == row.bytes
        assert row.sha256 in stored.name


def test_cifake_layout_keeps_test_and_carves_validation_from_train(
    make_tree: MakeTree, settings: Settings, tmp_path: Path
) -> None:
    src = make_tree({"train/REAL": 40, "train/FAKE": 40, "test/REAL": 10, "test/FAKE": 10})
    _ingest(settings, src, tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    from_test = manifest["source"].str.contains("/test/")
    assert (manifest.loc[from_test, "split"] == "test").all()
    assert set(manifest.loc[~from_test, "split"]) == {"train", "val"}
    assert set(manifest.loc[manifest["source"].str.contains("FAKE"), "label"]) == {"ai_generated"}


def test_explicit_val_folder_is_kept(make_tree: MakeTree, settings: Settings, tmp_path: Path) -> None:
    src = make_tree({"train/real": 5, "val/real": 5, "test/real": 5})
    _ingest(settings, src, tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    assert manifest["split"].value_counts().to_dict() == {"train": 5, "val": 5, "test": 5}


def test_duplicates_never_straddle_splits_and_same_label_copies_collapse(
    make_tree: MakeTree, settings: Settings, tmp_path: Path
) -> None:
    src = make_tree({"train/real": 3, "test/real": 3, "test/fake": 3})
    duplicate = next((src / "test" / "real").iterdir())
    shutil.copy(duplicate, src / "train" / "real" / "copy_of_test.png")  # same image in train and test
    shutil.copy(duplicate, src / "test" / "fake" / "mislabelled.png")  # same image under the other label
    result = _ingest(settings, src, tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    copies = manifest[manifest["sha256"] == manifest.loc[manifest["source"] == str(duplicate), "sha256"].iloc[0]]
    assert copies["split"].nunique() == 1
    assert sorted(copies["label"]) == ["ai_generated", "real"]  # the conflict stays visible for validate
    assert result.duplicates_dropped == 1
    assert result.files_seen == 11


def test_rerun_on_an_unchanged_source_reads_nothing_and_gives_the_same_version(
    make_tree: MakeTree, settings: Settings, tmp_path: Path
) -> None:
    src = make_tree({"real": 10, "ai_generated": 10})
    first = _ingest(settings, src, tmp_path / "one")
    second = _ingest(settings, src, tmp_path / "two")
    assert first.bytes_read > 0
    assert second.bytes_read == 0
    assert first.summary.dataset_version == second.summary.dataset_version
    path = read_manifest(tmp_path / "two")["path"].iloc[0]
    assert (tmp_path / "one" / path).stat().st_ino == (tmp_path / "two" / path).stat().st_ino  # hard-linked


def test_a_changed_file_is_read_again(make_tree: MakeTree, settings: Settings, tmp_path: Path) -> None:
    src = make_tree({"real": 10, "ai_generated": 10})
    first = _ingest(settings, src, tmp_path / "one")
    changed = next((src / "real").iterdir())
    changed.write_bytes(encode("PNG", (48, 48), seed=999))
    second = _ingest(settings, src, tmp_path / "two")
    assert 0 < second.bytes_read < first.bytes_read
    assert second.summary.dataset_version != first.summary.dataset_version


def test_corrupt_files_are_recorded_for_validate_not_dropped(
    make_tree: MakeTree, settings: Settings, tmp_path: Path
) -> None:
    src = make_tree({"real": 3, "ai_generated": 3})
    (src / "real" / "broken.jpg").write_bytes(b"not an image at all")
    _ingest(settings, src, tmp_path / "out")
    manifest = read_manifest(tmp_path / "out")
    broken = manifest[manifest["source"].str.endswith("broken.jpg")]
    assert len(broken) == 1
    assert broken["format"].iloc[0] == ""
    assert broken["path"].iloc[0].endswith(".bin")


def _parquet(path: Path, labels: list[object], split: list[str] | None = None) -> Path:
    frame = pd.DataFrame(
        {"image": [{"bytes": encode("PNG", seed=i), "path": f"{i}.png"} for i in range(len(labels))], "label": labels}
    )
    if split is not None:
        frame["split"] = split
    frame.to_parquet(path)
    return path


def test_hugging_face_parquet_with_integer_labels_and_a_label_map(settings: Settings, tmp_path: Path) -> None:
    src = _parquet(tmp_path / "train-00000-of-00001.parquet", [0, 1, 0, 1])
    _ingest(settings, src, tmp_path / "out", label_map="0=ai_generated,1=real")
    manifest = read_manifest(tmp_path / "out")
    assert sorted(manifest["label"]) == ["ai_generated", "ai_generated", "real", "real"]
    assert set(manifest["split"]) <= {"train", "val"}  # the file name says train; val is carved out of it


def test_parquet_folder_with_string_labels_and_a_split_column(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "pq").mkdir()
    _parquet(tmp_path / "pq" / "data.parquet", ["REAL", "FAKE", "REAL"], split=["test", "test", "validation"])
    _ingest(settings, tmp_path / "pq", tmp_path / "out")
    assert sorted(read_manifest(tmp_path / "out")["split"]) == ["test", "test", "val"]


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        ("missing-folder", {}, "does not exist"),  # a typo in the path
        ("empty", {}, "no labelled images found"),  # a folder without the class layout
        ("ints.parquet", {}, "pass a label map"),  # integer labels need a map
        ("ints.parquet", {"label_column": "target"}, "no column 'target'"),  # wrong column name
        ("ints.parquet", {"label_map": "0:fake"}, "bad label map entry"),  # malformed map
        ("s3://", {}, "bad S3 URI"),  # no bucket
    ],
)
def test_bad_sources_say_what_is_expected(
    settings: Settings, tmp_path: Path, source: str, kwargs: dict[str, str | bool], message: str
) -> None:
    (tmp_path / "empty" / "misc").mkdir(parents=True)
    (tmp_path / "empty" / "misc" / "a.png").write_bytes(encode("PNG"))
    _parquet(tmp_path / "ints.parquet", [0, 1])
    where = source if source.startswith("s3://") else tmp_path / source
    with pytest.raises(DataSourceError, match=message):
        _ingest(settings, where, tmp_path / "out", **kwargs)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("real", "a.jpg"), ("real", None, "")),  # a class folder
        (("ai_generated", "a.jpg"), ("ai_generated", None, "")),  # generated, generator not named
        (("ai_generated", "x4plus", "a.jpg"), ("ai_generated", None, "x4plus")),  # a generator subfolder
        (("FAKE", "sd-1.5", "a.jpg"), ("ai_generated", None, "sd-1.5")),  # CIFAKE's alias, the name kept as is
        (("train", "ai_generated", "a.jpg"), ("ai_generated", "train", "")),  # split layout
        (("validation", "ai_generated", "mj", "a.jpg"), ("ai_generated", "val", "mj")),  # split + generator
        (("test", "real", "phone", "a.jpg"), ("real", "test", "")),  # real subfolders name no generator
        (("ai_generated", "x4plus", "deeper", "a.jpg"), ("ai_generated", None, "")),  # only one level is a name
        (("misc", "a.jpg"), None),  # outside the layout
        (("train", "misc", "a.jpg"), None),  # a split folder without a class folder
        (("ai_generated",), None),  # a file named like a class folder
    ],
)
def test_paths_are_classified_into_label_split_and_generator(
    parts: tuple[str, ...], expected: tuple[str, str | None, str] | None
) -> None:
    assert _classify(parts) == expected


def test_generator_subfolders_land_in_the_manifest_and_the_version(
    make_tree: MakeTree, settings: Settings, tmp_path: Path
) -> None:
    src = make_tree({"train/real": 4, "train/ai_generated/x4plus": 2, "train/ai_generated": 2, "test/real": 2})
    first = _ingest(settings, src, tmp_path / "one")
    manifest = read_manifest(tmp_path / "one")
    fakes = manifest[manifest["label"] == "ai_generated"]
    assert sorted(fakes["generator"]) == ["", "", "x4plus", "x4plus"]
    assert (manifest.loc[manifest["label"] == "real", "generator"] == "").all()
    (src / "train" / "ai_generated" / "x4plus").rename(src / "train" / "ai_generated" / "anime")
    second = _ingest(settings, src, tmp_path / "two")
    assert second.summary.dataset_version != first.summary.dataset_version  # which generator is part of the data


def test_parquet_sources_name_no_generator(settings: Settings, tmp_path: Path) -> None:
    _ingest(settings, _parquet(tmp_path / "train.parquet", ["REAL", "FAKE"]), tmp_path / "out")
    assert (read_manifest(tmp_path / "out")["generator"] == "").all()


def test_by_reference_copies_nothing_and_keeps_the_copied_version(
    make_tree: MakeTree, settings: Settings, tmp_path: Path
) -> None:
    src = make_tree({"real": 10, "ai_generated": 10})
    referenced = _ingest(settings, src, tmp_path / "ref", by_reference=True)
    manifest = read_manifest(tmp_path / "ref")
    assert not (tmp_path / "ref" / "images").exists()
    assert referenced.bytes_read > 0  # each image is read once, to hash it
    assert json.loads((tmp_path / "ref" / "dataset.json").read_text())["by_reference"] is True
    for row in manifest.itertuples():
        source = Path(row.ref)
        assert source.is_absolute()
        assert source == Path(row.source).resolve()
        assert row.ref_check == f"{source.stat().st_size}:{source.stat().st_mtime_ns}"
        assert row.bytes == source.stat().st_size
    again = _ingest(settings, src, tmp_path / "again", by_reference=True)
    assert again.bytes_read == 0  # the cache knows every unchanged source's facts
    copied = _ingest(settings, src, tmp_path / "copy")
    assert copied.bytes_read > 0  # by reference stored no bytes to link
    assert referenced.summary.dataset_version == again.summary.dataset_version == copied.summary.dataset_version
    copy_manifest = read_manifest(tmp_path / "copy")
    assert list(copy_manifest["path"]) == list(manifest["path"])
    assert (copy_manifest[["ref", "ref_check"]] == "").all().all()
    assert json.loads((tmp_path / "copy" / "dataset.json").read_text())["by_reference"] is False


def test_parquet_cannot_be_ingested_by_reference(settings: Settings, tmp_path: Path) -> None:
    source = _parquet(tmp_path / "train.parquet", ["REAL", "FAKE"])
    with pytest.raises(DataSourceError, match="bytes inside the Parquet rows"):
        _ingest(settings, source, tmp_path / "out", by_reference=True)
    assert not (tmp_path / "out").exists()
