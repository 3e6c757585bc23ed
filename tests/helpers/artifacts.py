"""A small real detector, packaged as ``apd`` register packages one (``components.common.artifact``), and registered
in a local MLflow the way the serving and drift code find it (``models:/NAME@champion``)."""

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from components.common.artifact import ArtifactConfig, export_onnx, write_artifact
from components.common.model import Detector, build_model, save_checkpoint
from components.common.model_config import ModelConfig
from components.common.runtimes import ONNX_FILE
from components.common.settings import MlflowSettings
from components.common.transforms import Preprocessing

SMALL = ModelConfig(preprocessing=Preprocessing(image_size=64))  # 64 px crops: fast on two cores


def detector(config: ModelConfig = SMALL, seed: int = 0) -> Detector:
    """A real detector in eval mode, head untrained, seeded: the same weights for the same ``seed``."""
    import torch

    torch.manual_seed(seed)
    return build_model(config).eval()


def package_artifact(
    model: Detector,
    folder: Path,
    *,
    threshold: float = 0.5,
    dataset_version: str = "test",
    metrics: dict[str, float] | None = None,
    onnx: bool = True,
) -> ArtifactConfig:
    """``model`` as an artifact folder (weights, config.json, metrics.json, and ``model.onnx`` unless ``onnx`` is
    False); returns the config written. The drift reference is the caller's (``REFERENCE_FILE``)."""
    config = ArtifactConfig(model.config, threshold, dataset_version)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "model.pt"
        save_checkpoint(model, checkpoint, {"train_config": {}, "dataset_version": dataset_version})
        write_artifact(folder, checkpoint, config, {"test_accuracy": 0.5} if metrics is None else metrics)
    if onnx:
        export_onnx(model, folder / ONNX_FILE)
    return config


def detector_artifact(folder: Path) -> Path:
    """The small detector (seed 0: every call gives the same one) packaged with its ONNX export into ``folder``.
    Served from ``mnt/models`` its answers carry model version ``models-test``."""
    package_artifact(detector(), folder)
    return folder


def register_artifact(tracking: MlflowSettings, folder: Path, name: str, alias: str = "champion") -> str:
    """Log ``folder`` as a run's artifact in the MLflow of ``tracking``, create a version of model ``name`` from it
    and point ``alias`` at it; returns the version."""
    import mlflow

    from components.common.tracking import setup_tracking
    from components.register import ARTIFACT_PATH

    experiment = setup_tracking(tracking)
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(folder), ARTIFACT_PATH)
    client = mlflow.MlflowClient()
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/{ARTIFACT_PATH}", run.info.run_id)
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


@contextlib.contextmanager
def local_mlflow(folder: Path) -> Iterator[MlflowSettings]:
    """MLflow on SQLite in ``folder`` (artifacts beside it) as this process's tracking and registry URI, the
    experiment created; the previous URIs are back afterwards."""
    import mlflow

    from components.common.tracking import setup_tracking

    tracking = MlflowSettings(tracking_uri=f"sqlite:///{folder}/mlflow.db", artifact_root=str(folder / "artifacts"))
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    setup_tracking(tracking)
    try:
        yield tracking
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
