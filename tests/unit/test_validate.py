"""Every validation rule, on real datasets made by ingest from generated folders."""

from pathlib import Path

import pandas as pd
import pytest

from components.common.dataset_files import DatasetImages
from components.common.settings import Settings, ValidationRules
from components.ingest import ingest_dataset
from components.validate import ValidationReport, validate_dataset, write_report
from tests.conftest import MakeTree
from tests.helpers.images import encode

# Fixed splits keep the counts exact: 12/6/6 images per class in train/val/test.
BALANCED = {
    f"{split}/{label}": n for split, n in (("train", 12), ("val", 6), ("test", 6)) for label in ("real", "fake")
}
RULES = ValidationRules(min_images_per_split=10)


def _validate(
    make_tree: MakeTree, settings: Settings, tmp_path: Path, layout: dict[str, int], **extra_files: bytes
) -> ValidationReport:
    src = make_tree(layout)
    for rel, data in extra_files.items():
        (src / rel.replace("__", "/")).write_bytes(data)
    ingest_dataset(str(src), tmp_path / "ds", settings.data_dir / "cache", settings.splits, settings.s3)
    return validate_dataset(DatasetImages(tmp_path / "ds"), settings.images, RULES)


def test_a_clean_balanced_dataset_passes(make_tree: MakeTree, settings: Settings, tmp_path: Path) -> None:
    report = _validate(make_tree, settings, tmp_path, BALANCED)
    assert report.passed, report.failure_message()
    assert report.counts["val"] == {"real": 6, "ai_generated": 6}
    assert report.warnings == []


@pytest.mark.parametrize(
    ("extra", "rule", "file_suffix", "says"),
    [
        ({"train__real__empty.png": b""}, "decodes", ".bin", "0 bytes"),  # a zero-byte file
        ({"train__real__notes.jpg": b"some text"}, "decodes", ".bin", "not a recognised image"),  # not an image
        ({"train__real__cut.png": encode("PNG")[:-300]}, "decodes", ".png", "truncated or corrupt"),  # truncated
        ({"train__real__anim.gif": encode("GIF")}, "allowed_format", ".bin", "GIF images are not accepted"),  # GIF
        ({"train__real__tiny.png": encode("PNG", size=(20, 20))}, "min_size", ".png", "at least 32 pixels"),  # tiny
    ],
)
def test_bad_files_block_and_are_named(
    make_tree: MakeTree,
    settings: Settings,
    tmp_path: Path,
    extra: dict[str, bytes],
    rule: str,
    file_suffix: str,
    says: str,
) -> None:
    report = _validate(make_tree, settings, tmp_path, BALANCED, **extra)
    assert not report.passed
    [finding] = report.errors
    assert finding.rule == rule
    assert says in finding.message
    assert len(finding.files) == 1
    assert finding.files[0].endswith(file_suffix)
    assert rule in report.failure_message()
    assert finding.files[0] in report.failure_message()


@pytest.mark.parametrize(
    ("layout", "rule", "says"),
    [
        # no fake images in test
        ({**BALANCED, "test/fake": 0}, "both_classes", "split test has no ai_generated images"),
        # 24 real vs 12 fake in train: ratio 2 > 1.5
        ({**BALANCED, "train/real": 24}, "class_balance", "split train: 24 real vs 12 ai_generated, ratio 2.00"),
        # only 4 + 4 validation images < 10
        ({**BALANCED, "val/real": 4, "val/fake": 4}, "min_split_size", "split val has 8 images; at least 10"),
    ],
)
def test_dataset_level_rules_block(
    make_tree: MakeTree, settings: Settings, tmp_path: Path, layout: dict[str, int], rule: str, says: str
) -> None:
    report = _validate(make_tree, settings, tmp_path, layout)
    assert rule in [f.rule for f in report.errors]
    assert any(says in f.message for f in report.errors), report.failure_message()


def test_near_limit_imbalance_warns_without_blocking(make_tree: MakeTree, settings: Settings, tmp_path: Path) -> None:
    # train: 16 real vs 12 fake = 1.33, above the warning level 1.25, below the limit 1.5
    report = _validate(make_tree, settings, tmp_path, {**BALANCED, "train/real": 16})
    assert report.passed
    assert [w.rule for w in report.warnings] == ["class_balance"]
    assert "near the limit" in report.warnings[0].message


def test_same_image_under_both_labels_blocks(make_tree: MakeTree, settings: Settings, tmp_path: Path) -> None:
    clash = encode("PNG", (48, 48), seed=12345)
    report = _validate(make_tree, settings, tmp_path, BALANCED, train__real__x_clash=clash, train__fake__y_clash=clash)
    [finding] = report.errors
    assert finding.rule == "label_conflicts"
    assert len(finding.files) == 1  # one stored file, listed once


def test_cross_split_duplicates_in_a_manifest_block(make_tree: MakeTree, settings: Settings, tmp_path: Path) -> None:
    # Ingest never writes such a manifest; validate still guards manifests edited or made elsewhere.
    _validate(make_tree, settings, tmp_path, BALANCED)
    manifest = pd.read_parquet(tmp_path / "ds" / "manifest.parquet")
    leaked = manifest[manifest["split"] == "train"].iloc[[0]].assign(split="test")
    pd.concat([manifest, leaked]).to_parquet(tmp_path / "ds" / "manifest.parquet", index=False)
    report = validate_dataset(DatasetImages(tmp_path / "ds"), settings.images, RULES)
    assert [f.rule for f in report.errors] == ["no_cross_split_duplicates"]


def test_reports_are_written_as_json_and_markdown(make_tree: MakeTree, settings: Settings, tmp_path: Path) -> None:
    report = _validate(make_tree, settings, tmp_path, BALANCED, train__real__bad_jpg=b"nope")
    write_report(report, tmp_path / "r.json", tmp_path / "r.md")
    text = (tmp_path / "r.md").read_text()
    assert "# Dataset validation: FAILED" in text
    assert "| train | 13 | 12 | 25 |" in text
    assert '"passed": false' in (tmp_path / "r.json").read_text()


def test_a_dataset_by_reference_is_validated_at_its_sources(
    make_tree: MakeTree, settings: Settings, tmp_path: Path
) -> None:
    src = make_tree(BALANCED)
    cache = settings.data_dir / "cache"
    ingest_dataset(str(src), tmp_path / "ds", cache, settings.splits, settings.s3, by_reference=True)
    images = DatasetImages(tmp_path / "ds")
    assert validate_dataset(images, settings.images, RULES).passed
    changed, gone = sorted((src / "train" / "real").iterdir())[:2]
    changed.write_bytes(encode("PNG", (48, 48), seed=4242))
    gone.unlink()
    report = validate_dataset(images, settings.images, RULES)
    [finding] = report.errors
    assert finding.rule == "decodes"
    assert sorted(finding.files) == sorted([str(changed.resolve()), str(gone.resolve())])
    assert "changed since it was ingested" in finding.message
    assert "is missing" in finding.message
    assert str(gone.resolve()) in report.failure_message()
