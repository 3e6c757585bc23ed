"""Fixtures of the rollout tests: a real MLflow registry on a temporary SQLite file holding the model versions of
``objects.SOURCES``, and ``apd``'s settings pointing at it.
"""

from collections.abc import Iterator

import mlflow
import pytest

from tests.unit.rollout.objects import MODEL, SOURCES


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow registry (SQLite) holding model versions 1-4 of apd-detector with objects.SOURCES."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient()
    client.create_registered_model(MODEL)
    for source in SOURCES.values():
        client.create_model_version(MODEL, source=source)
    yield uri
    mlflow.set_tracking_uri(previous)
    mlflow.set_registry_uri(previous)


@pytest.fixture
def cli_env(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``apd`` reads the test registry from its settings."""
    monkeypatch.setenv("APD_MLFLOW__TRACKING_URI", registry)
    monkeypatch.setenv("APD_MLFLOW__MODEL_NAME", MODEL)
