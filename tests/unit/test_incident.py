"""The drift drill's bookkeeping: its traffic order, its scores, its retraining source."""

from pathlib import Path

import pytest

from pipelines.incident.report import scores
from pipelines.incident.retrain import union
from pipelines.incident.traffic import interleave


def test_scores_are_accuracy_and_the_share_of_generated_images_called_real() -> None:
    pairs = [("real", "real"), ("real", "ai_generated"), ("ai_generated", "real"), ("ai_generated", "ai_generated"),
             ("ai_generated", "real"), ("ai_generated", "ai_generated")]  # fmt: skip
    accuracy, false_negative_rate = scores(pairs)
    assert accuracy == pytest.approx(3 / 6)
    assert false_negative_rate == pytest.approx(2 / 4)
    assert scores([("real", "real")]) == (1.0, 0.0)  # no generated image: no false negative


def test_traffic_alternates_real_and_generated_and_keeps_every_image() -> None:
    images = [(Path(f"r{k}"), "real") for k in range(2)] + [(Path(f"a{k}"), "ai_generated") for k in range(4)]
    mixed = interleave(images)
    assert [label for _, label in mixed] == ["real", "ai_generated"] * 2 + ["ai_generated"] * 2
    assert sorted(mixed) == sorted(images)


def test_retraining_source_joins_builds_without_name_clashes(tmp_path: Path) -> None:
    for build in ("demo", "demo-newgen"):
        for label in ("real", "ai_generated"):
            (tmp_path / build / "train" / label).mkdir(parents=True)
            (tmp_path / build / "train" / label / "photo_0.jpg").write_bytes(f"{build} {label}".encode())
    out = union(tmp_path / "union", tmp_path / "demo", tmp_path / "demo-newgen")
    files = {str(p.relative_to(out)) for p in out.rglob("*.jpg")}
    assert files == {f"train/{label}/{build}_photo_0.jpg" for label in ("ai_generated", "real")
                     for build in ("demo", "demo-newgen")}  # fmt: skip
    assert (out / "train" / "real" / "demo-newgen_photo_0.jpg").read_bytes() == b"demo-newgen real"
    assert (out / "train" / "real" / "demo_photo_0.jpg").stat().st_nlink == 2  # a hard link, not a copy
    assert union(tmp_path / "union", tmp_path / "demo") == out  # a rerun starts from an empty folder
    assert len(list(out.rglob("*.jpg"))) == 2
