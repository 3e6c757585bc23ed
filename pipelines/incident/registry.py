"""The drill and the MLflow registry: the champion it starts from, the version the retraining registered."""

from components.common.settings import Settings
from components.common.tracking import setup_tracking


def champion(settings: Settings) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    setup_tracking(settings.mlflow)
    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(settings.mlflow.model_name, "champion").version)
    except MlflowException:
        raise SystemExit("no champion registered: run `make demo` first") from None


def keep_champion(settings: Settings, version: str) -> bool:
    """Point the champion alias back at the drill's starting model if the retraining moved it (True then)."""
    import mlflow

    if champion(settings) == version:
        return False
    mlflow.MlflowClient().set_registered_model_alias(settings.mlflow.model_name, "champion", version)
    return True


def latest_version(settings: Settings) -> str:
    import mlflow

    versions = mlflow.MlflowClient().search_model_versions(f"name = '{settings.mlflow.model_name}'")
    return str(max(int(v.version) for v in versions))
