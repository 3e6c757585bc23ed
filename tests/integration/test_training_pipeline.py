"""The whole pipeline under kfp.local against a real MLflow (SQLite + local artifacts): registry, aliases, gate,
determinism."""

import base64
import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from minio import Minio
from PIL import Image

from components.common.artifact import (
    CONFIG_FILE,
    REFERENCE_FILE,
    WEIGHTS_FILE,
    fetch_artifact,
    load_artifact,
)
from components.common.dataset_files import DatasetImages
from components.common.runtimes import EXACT_VARIANTS, INT8_FILE, ONNX_FILE
from components.common.settings import MlflowSettings, S3Settings, Settings
from components.common.tracking import new_run, setup_tracking
from components.ingest import ingest_dataset
from components.train import TrainConfig, train_detector
from pipelines.local import run_local
from pipelines.training import training_pipeline
from tests.helpers.servers import ModelServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Tiny and fast: 1 epoch on 32 px crops; bars low enough for what one epoch on 24 training images can learn (the
# toy classes differ in pixel noise, which a 0.5x downscale erases: no robustness bar).
FAST = {"epochs": 1, "image_size": 32, "batch_size": 8, "num_workers": 0, "min_images_per_split": 4,
        "max_auc_drop": 1.0}  # fmt: skip


def _smooth(rng: np.random.Generator, noisy: bool) -> bytes:
    """'real': smooth colour fields; 'ai_generated': the same plus high-frequency noise. Learnable in one epoch."""
    base = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((48, 48), Image.Resampling.BICUBIC)
    pixels = np.asarray(base, dtype=np.int16)
    if noisy:
        pixels = pixels + rng.integers(-60, 61, pixels.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _learnable_tree(root: Path, per_split: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in per_split.items():
        for label in ("real", "ai_generated"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{i}.png").write_bytes(_smooth(rng, noisy=label == "ai_generated"))
    return root


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Every step (a subprocess) uses this test's own MLflow database, artifact folder and ingest cache."""
    monkeypatch.setenv("APD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("APD_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("APD_MLFLOW__ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.setenv("APD_MLFLOW__MODEL_NAME", "apd-test")
    settings = Settings()
    setup_tracking(settings.mlflow)
    return settings


def test_pipeline_registers_a_loadable_champion_then_a_challenger(tmp_path: Path, env: Settings) -> None:
    src = _learnable_tree(tmp_path / "src", {"train": 12, "val": 6, "test": 6})
    report = run_local(training_pipeline, tmp_path / "runs", source=str(src), min_accuracy=0.5, min_f1=0.5, **FAST)
    assert "PASSED the quality gate" in Path(report.output.path).read_text()

    client = mlflow.MlflowClient()
    [version] = client.search_model_versions("name = 'apd-test'")
    assert client.get_registered_model("apd-test").aliases == {"champion": 1, "challenger": 1}
    dataset_version = json.loads(next((tmp_path / "runs").glob("*/ingest/dataset/dataset.json")).read_text())[
        "dataset_version"
    ]
    assert version.tags["dataset_version"] == dataset_version
    assert version.tags["param.epochs"] == "1"
    assert version.tags["param.image_size"] == "32"
    assert float(version.tags["metric.test_accuracy"]) >= 0.5
    assert 0 < float(version.tags["threshold"]) < 1
    assert len(version.tags["git_commit"]) >= 7
    assert {"training_date", "metric.test_f1", "metric.test_roc_auc", "param.lr"} <= set(version.tags)

    folder = fetch_artifact("models:/apd-test@champion", tmp_path / "download")
    files = {WEIGHTS_FILE, ONNX_FILE, INT8_FILE, CONFIG_FILE, REFERENCE_FILE, "metrics.json"}
    assert files <= {p.name for p in folder.iterdir()}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["onnx_max_abs_diff"] < 1e-4
    assert {"openvino_bf16_test_roc_auc", "openvino_int8_test_accuracy", "openvino_int8_flip_rate_upper"} <= set(
        metrics
    )
    robustness = {
        f"test_{c}_{m}" for c in ("jpeg_q75", "downscale_0_5x", "upscale_2x") for m in ("roc_auc", "auc_drop")
    }
    assert robustness | {"test_ece_before", "test_ece_after", "test_fpr_real", "temperature"} <= set(metrics)
    model, config = load_artifact(folder)
    assert set(EXACT_VARIANTS) <= set(config.variants)
    assert not model.training
    assert config.model.preprocessing.image_size == 32
    assert config.model.preprocessing.mode == "native"
    assert config.temperature == pytest.approx(metrics["temperature"])
    assert config.dataset_version == dataset_version
    reference = pd.read_parquet(folder / REFERENCE_FILE)
    assert len(reference) == 12  # the validation split
    assert {"brightness", "jpeg_quality", "format", "probability", "label", "predicted_label", "confidence"} <= set(
        reference.columns
    )
    run = client.get_run(version.run_id)
    assert {"test_accuracy", "test_f1", "threshold", "val_loss", "train_loss"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "plots")}
    assert artifacts == {"plots/roc_curve.png", "plots/confusion_matrix.png"}

    # The served model gives each image the probability the evaluate step gave it (calibrated, same crops).
    evaluation = json.loads(next((tmp_path / "runs").glob("*/evaluate/evaluation")).read_text())
    dataset = next((tmp_path / "runs").glob("*/ingest/dataset"))
    manifest = pd.read_parquet(dataset / "manifest.parquet").set_index("sha256")
    server = ModelServer(tmp_path, "models:/apd-test@champion")
    try:
        for sha, expected in list(evaluation["val_predictions"].items())[:4]:
            image = base64.b64encode((dataset / manifest.loc[sha, "path"]).read_bytes()).decode()
            status, body = server.call(
                "POST", "/v1/models/apd-detector:predict", {"instances": [{"image": {"b64": image}}]}
            )
            assert status == 200, body
            assert body["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-4)
    finally:
        server.stop()

    # A second, identical run, ingesting by reference this time: the same dataset version and the same model, so the
    # candidate ties the champion and only the challenger alias moves.
    second = run_local(
        training_pipeline, tmp_path / "runs", source=str(src), min_accuracy=0.5, min_f1=0.5, by_reference=True, **FAST
    )
    referenced = sorted((tmp_path / "runs").glob("*/ingest/dataset/dataset.json"))[-1]
    assert json.loads(referenced.read_text())["by_reference"] is True
    assert not (referenced.parent / "images").exists()
    assert "champion v1" in Path(second.output.path).read_text()
    assert client.get_registered_model("apd-test").aliases == {"champion": 1, "challenger": 2}
    again = client.get_model_version("apd-test", "2")
    metric_tags = {k: v for k, v in version.tags.items() if k.startswith("metric.")}
    assert metric_tags == {k: v for k, v in again.tags.items() if k.startswith("metric.")}  # deterministic


def test_a_model_below_the_gate_registers_nothing(
    tmp_path: Path, env: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    """Trained by two processes on this machine (``train_procs=2``: torchrun), then stopped at the gate."""
    src = _learnable_tree(tmp_path / "src", {"train": 8, "val": 4, "test": 4})
    with pytest.raises(RuntimeError, match=r"Inner task failed: .*evaluate"):
        run_local(
            training_pipeline, tmp_path / "runs", source=str(src), min_accuracy=1.0, min_f1=1.0, train_procs=2, **FAST
        )
    logs = capfd.readouterr()
    assert "distributed_training_done" in logs.out + logs.err
    assert "QualityGateError: the model failed the quality gate: test accuracy" in logs.out + logs.err
    assert "is below the bar 1.0000" in logs.out + logs.err
    assert mlflow.MlflowClient().search_model_versions("name = 'apd-test'") == []


def test_mlflow_artifacts_on_an_s3_server(
    tmp_path: Path, s3_server: S3Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tracking on SQLite, artifacts in a bucket of a real S3 server: what a cluster does with MinIO."""
    Minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, secure=False).make_bucket("mlflow")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://{s3_server.endpoint}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", str(s3_server.access_key))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", str(s3_server.secret_key))
    tracking = MlflowSettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root="s3://mlflow/experiments")
    experiment = setup_tracking(tracking)
    src = _learnable_tree(tmp_path / "src", {"train": 8, "val": 4, "test": 4})
    settings = Settings(data_dir=tmp_path / "data")
    summary = ingest_dataset(str(src), tmp_path / "ds", tmp_path / "cache", settings.splits, settings.s3).summary
    cfg = TrainConfig(epochs=1, image_size=32, batch_size=8, num_workers=0)
    result = train_detector(
        cfg,
        DatasetImages(tmp_path / "ds"),
        tmp_path / "out",
        settings.images,
        new_run(experiment),
        summary.dataset_version,
    )
    keys = [
        o.object_name
        for o in Minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, secure=False).list_objects(
            "mlflow", recursive=True
        )
    ]
    assert f"experiments/{result.run_id}/artifacts/checkpoint/model.pt" in keys
    fetched = fetch_artifact(f"runs:/{result.run_id}/checkpoint", tmp_path / "back")
    assert (fetched / "model.pt").read_bytes() == result.checkpoint.read_bytes()
