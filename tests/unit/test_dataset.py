"""Split assignment and dataset versioning."""

import hashlib
from pathlib import Path

import pandas as pd
import pytest

from components.common.dataset import (
    MANIFEST_FILE,
    dataset_version,
    read_manifest,
    split_for_hash,
    train_or_val_for_hash,
)
from components.common.settings import SplitSettings

SPLITS = SplitSettings()


def _sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_split_is_a_function_of_the_hash() -> None:
    assert [split_for_hash(_sha(i), SPLITS) for i in range(200)] == [
        split_for_hash(_sha(i), SPLITS) for i in range(200)
    ]


def test_split_fractions_follow_the_settings() -> None:
    shares = pd.Series([split_for_hash(_sha(i), SPLITS) for i in range(20_000)]).value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.70, abs=0.015)
    assert shares["val"] == pytest.approx(0.15, abs=0.015)
    assert shares["test"] == pytest.approx(0.15, abs=0.015)


def test_validation_carved_from_a_fixed_train_split_has_the_right_share() -> None:
    shares = pd.Series([train_or_val_for_hash(_sha(i), SPLITS) for i in range(20_000)]).value_counts(normalize=True)
    assert shares["val"] == pytest.approx(0.15 / 0.85, abs=0.015)


def _manifest() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sha256": [_sha(1), _sha(2)],
            "label": ["real", "ai_generated"],
            "split": ["train", "test"],
            "generator": ["", "x4plus"],
            "path": ["images/a.png", "images/b.png"],
            "source": ["/x/real/a.png", "/x/ai_generated/b.png"],
            "format": ["PNG", "PNG"],
            "width": [48, 48],
            "height": [48, 48],
            "bytes": [100, 200],
        }
    )


def test_version_ignores_row_order_and_where_files_came_from_or_are_read() -> None:
    manifest = _manifest()
    moved = manifest.assign(source=["s3://b/real/a.png", "s3://b/ai_generated/b.png"])
    referenced = manifest.assign(ref=["/x/real/a.png", "s3://b/ai_generated/b.png"], ref_check=["100:1", "etag"])
    assert dataset_version(manifest) == dataset_version(manifest.iloc[::-1]) == dataset_version(moved)
    assert dataset_version(referenced) == dataset_version(manifest)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("label", ["ai_generated", "ai_generated"]),  # a relabelled image is a new dataset
        ("split", ["val", "test"]),  # so is a moved one
        ("sha256", [_sha(3), _sha(2)]),  # and changed content
        ("generator", ["", "anime"]),  # and another generator behind a generated image
    ],
)
def test_version_changes_with_content_labels_and_splits(column: str, value: list[str]) -> None:
    manifest = _manifest()
    assert dataset_version(manifest) != dataset_version(manifest.assign(**{column: value}))


def test_a_manifest_written_before_the_generator_and_ref_columns_reads_with_them_empty(tmp_path: Path) -> None:
    manifest = _manifest().assign(generator="")
    manifest.drop(columns="generator").to_parquet(tmp_path / MANIFEST_FILE, index=False)
    old = read_manifest(tmp_path)
    assert (old[["generator", "ref", "ref_check"]] == "").all().all()
    assert dataset_version(old) == dataset_version(manifest) == dataset_version(manifest.drop(columns="generator"))
