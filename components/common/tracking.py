"""MLflow set-up shared by the train, evaluate and register stages."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from components.common.settings import MlflowSettings


def _artifact_location(root: str) -> str:
    """A local folder becomes an absolute file URI; URIs (s3://, file://) pass through."""
    return root if "://" in root else Path(root).resolve().as_uri()


def setup_tracking(settings: MlflowSettings) -> str:
    """Point MLflow at ``settings.tracking_uri`` and return the id of the experiment (created when missing)."""
    if settings.tracking_uri.startswith("sqlite:///"):
        Path(settings.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = _artifact_location(settings.artifact_root)
    return str(client.create_experiment(settings.experiment, artifact_location=location))


def new_run(experiment_id: str) -> str:
    """Create a run in the experiment and return its id; whoever trains resumes it (``mlflow.start_run(run_id=...)``),
    so the id is known before training starts, in this process or in others."""
    return str(MlflowClient().create_run(experiment_id).info.run_id)
