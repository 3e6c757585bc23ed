"""Registering an evaluated model (``components.register``) in a real MLflow on SQLite: the version's tags and
artifact, what of the evaluation it keeps, the drift reference, and how the champion and challenger aliases move.
The whole training pipeline, register included, runs in tests/integration/test_training_pipeline.py."""

import json
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from components.common.artifact import CONFIG_FILE, METRICS_FILE, REFERENCE_FILE, WEIGHTS_FILE, fetch_artifact
from components.common.artifact import load_artifact as load_folder
from components.common.dataset import read_manifest
from components.common.dataset_files import DatasetImages
from components.common.features import FEATURE_NAMES
from components.common.model import save_checkpoint
from components.common.model_config import CHECKPOINT_FILE
from components.common.runtimes import ONNX_FILE
from components.common.settings import ImageLimits, MlflowSettings, Settings
from components.common.tracking import setup_tracking
from components.evaluate import Evaluation
from components.ingest import ingest_dataset
from components.register import ARTIFACT_PATH, Registration, git_commit, register_model
from tests.conftest import MakeTree
from tests.helpers.artifacts import detector, local_mlflow

MODEL = "apd-test"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TRAIN_CONFIG = {"epochs": 2, "lr": 0.001, "image_size": 64}
ONNX_BYTES = b"the evaluate step's ONNX export"  # register copies the exports; it never opens them


@pytest.fixture
def tracking(tmp_path: Path) -> Iterator[MlflowSettings]:
    with local_mlflow(tmp_path / "mlflow") as settings:
        yield settings


@pytest.fixture
def trained(make_tree: MakeTree, settings: Settings, tmp_path: Path) -> dict[str, Path]:
    """What the steps before register leave: an ingested dataset (3 + 3 validation images), the trained checkpoint
    folder (64 px detector) and the evaluate step's export folder."""
    source = make_tree({"train/real": 2, "train/ai_generated": 2, "val/real": 3, "val/ai_generated": 3,
                        "test/real": 1, "test/ai_generated": 1})  # fmt: skip
    dataset = tmp_path / "dataset"
    summary = ingest_dataset(str(source), dataset, settings.data_dir / "cache", settings.splits, settings.s3).summary
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    extra = {"dataset_version": summary.dataset_version, "train_config": TRAIN_CONFIG}
    save_checkpoint(detector(), checkpoint / CHECKPOINT_FILE, extra)
    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / ONNX_FILE).write_bytes(ONNX_BYTES)
    return {"dataset": dataset, "checkpoint": checkpoint, "exported": exported}


def _evaluation(dataset: Path, beats_champion: bool = True) -> dict[str, Any]:
    """The evaluate step's JSON: a champion scored alongside; two variants measured (one not faithful), one
    that could not run."""
    val = read_manifest(dataset).query("split == 'val'").sort_values("sha256")
    evaluation = Evaluation(
        threshold=0.4,
        temperature=1.5,
        metrics={"accuracy": 0.75, "f1": 0.7},
        confusion=[[1, 0], [0, 1]],
        roc={"fpr": [0.0, 1.0], "tpr": [0.0, 1.0], "thresholds": [1.0, 0.0]},
        val_predictions=dict(zip(val["sha256"], [0.1, 0.35, 0.45, 0.6, 0.9, 0.99], strict=True)),
        robustness={"jpeg q75": {"roc_auc": 0.8, "auc_drop": 0.01}},
        onnx_max_abs_diff=2e-6,
        variants={
            "torch/fp32": {"roc_auc": 0.9, "accuracy": 0.75, "flip_rate_upper": 0.0, "enabled": True},
            "openvino/int8": {"roc_auc": 0.7, "accuracy": 0.6, "flip_rate_upper": 0.3, "enabled": False},
            "openvino/fp32": {"roc_auc": 0.9, "accuracy": 0.75, "flip_rate_upper": 0.0, "enabled": True},
            "onnxruntime/int8": {"error": "no int8 kernel", "enabled": False},
        },
        champion={"version": "1", "metrics": {"accuracy": 0.7}},
        beats_champion=beats_champion,
    )
    return dict(json.loads(json.dumps(asdict(evaluation))))  # as register reads it: the JSON file


def _register(trained: dict[str, Path], tracking: MlflowSettings, evaluation: dict[str, Any]) -> Registration:
    with mlflow.start_run(experiment_id=setup_tracking(tracking)) as run:
        pass  # the training run that register logs the artifact to
    folders = trained["checkpoint"], trained["exported"]
    dataset = DatasetImages(trained["dataset"])
    return register_model(*folders, dataset, evaluation, run.info.run_id, MODEL, ImageLimits(), COMMIT)


def test_the_version_carries_its_provenance_and_only_its_own_figures(
    trained: dict[str, Path], tracking: MlflowSettings
) -> None:
    evaluation = _evaluation(trained["dataset"])
    result = _register(trained, tracking, evaluation)
    assert (result.model_name, result.version, result.aliases) == (MODEL, "1", ["challenger", "champion"])
    assert result.source.endswith(f"/{ARTIFACT_PATH}")
    tags = mlflow.MlflowClient().get_model_version(MODEL, "1").tags
    dataset_version = json.loads((trained["dataset"] / "dataset.json").read_text())["dataset_version"]
    assert (tags["dataset_version"], tags["git_commit"], tags["threshold"]) == (dataset_version, COMMIT, "0.400000")
    assert {k: tags[f"param.{k}"] for k in TRAIN_CONFIG} == {"epochs": "2", "lr": "0.001", "image_size": "64"}
    assert tags["metric.test_accuracy"] == "0.750000"
    assert tags["metric.temperature"] == "1.500000"
    assert tags["metric.test_jpeg_q75_auc_drop"] == "0.010000"
    assert tags["metric.openvino_int8_test_roc_auc"] == "0.700000"  # measured, though not enabled
    assert not [k for k in tags if "onnxruntime_int8" in k]  # it never ran: no figures
    assert not [k for k in tags if "champion" in k]  # the champion's figures stay on the run
    assert abs(datetime.fromisoformat(tags["training_date"]) - datetime.now(UTC)).total_seconds() < 600


def test_the_artifact_holds_weights_serving_config_exports_metrics_and_the_drift_reference(
    trained: dict[str, Path], tracking: MlflowSettings, tmp_path: Path
) -> None:
    _register(trained, tracking, _evaluation(trained["dataset"]))
    folder = fetch_artifact(f"models:/{MODEL}@champion", tmp_path / "download")
    assert {p.name for p in folder.iterdir()} == {WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE, REFERENCE_FILE, ONNX_FILE}
    assert (folder / ONNX_FILE).read_bytes() == ONNX_BYTES
    model, config = load_folder(folder)
    assert (config.threshold, config.temperature) == (0.4, 1.5)
    assert config.variants == ("torch/fp32", "openvino/fp32")  # the enabled ones, in the evaluation's order
    assert config.model == model.config
    metrics = json.loads((folder / METRICS_FILE).read_text())
    assert metrics["test_accuracy"] == 0.75
    assert "champion_test_accuracy" not in metrics
    reference = pd.read_parquet(folder / REFERENCE_FILE)
    assert len(reference) == 6  # one row per validation image
    assert set(FEATURE_NAMES) <= set(reference.columns)
    assert sorted(reference["probability"]) == [0.1, 0.35, 0.45, 0.6, 0.9, 0.99]
    by_probability = reference.set_index("probability")
    assert by_probability.loc[0.35, "predicted_label"] == "real"  # under the threshold 0.4
    assert by_probability.loc[0.45, "predicted_label"] == "ai_generated"
    assert by_probability.loc[0.99, "confidence"] == "high"
    assert by_probability.loc[0.45, "confidence"] == "low"
    assert set(reference["label"]) == {"real", "ai_generated"}  # the true labels, from the manifest


def test_challenger_moves_to_every_version_champion_only_to_a_better_one(
    trained: dict[str, Path], tracking: MlflowSettings
) -> None:
    client = mlflow.MlflowClient()
    first = _register(trained, tracking, _evaluation(trained["dataset"]))
    second = _register(trained, tracking, _evaluation(trained["dataset"], beats_champion=False))
    assert (second.version, second.aliases) == ("2", ["challenger"])
    assert client.get_registered_model(MODEL).aliases == {"champion": 1, "challenger": 2}
    third = _register(trained, tracking, _evaluation(trained["dataset"], beats_champion=True))
    assert (third.version, third.aliases) == ("3", ["challenger", "champion"])
    assert client.get_registered_model(MODEL).aliases == {"champion": 3, "challenger": 3}
    assert first.source != third.source  # each version's artifact lives in its own run
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == 3


def test_the_commit_is_the_configured_one_else_the_checkouts_else_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    assert git_commit("abc1234") == "abc1234"
    checkout = git_commit("")
    assert len(checkout) == 40
    assert int(checkout, 16) >= 0
    monkeypatch.setenv("PATH", "")  # no git to ask
    assert git_commit("") == "unknown"
