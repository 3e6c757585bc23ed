"""The storageUri of a registered model version: its source in the MLflow registry, if KServe can download it."""

from components.common.errors import DeployError

# URI schemes KServe's storage initializer downloads from (the ones this platform's artifacts can live behind)
STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "https://")


def resolve_storage_uri(model_name: str, version: str) -> str:
    """The storageUri of registered model version ``version`` (its source), checked readable by KServe."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        model_version = mlflow.MlflowClient().get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise DeployError(
            f"model version {version} of {model_name!r} not found in the MLflow registry at "
            f"{mlflow.get_registry_uri()}: {exc.message}"
        ) from exc
    return check_storage_uri(str(model_version.source), model_name, str(version))


def check_storage_uri(source: str, model_name: str, version: str) -> str:
    """``source`` when KServe's storage initializer can download it, else a DeployError saying how to get there."""
    if source.startswith(STORAGE_SCHEMES):
        return source
    raise DeployError(
        f"model version {version} of {model_name!r} is stored at {source!r}, which KServe's storage initializer "
        f"cannot read (it reads {', '.join(STORAGE_SCHEMES)} URIs). Keep MLflow's artifacts on the object store: "
        "start the MLflow server with '--default-artifact-root s3://<bucket>/<prefix> --no-serve-artifacts' (with "
        "proxied artifacts, model sources are mlflow-artifacts:/ URIs), or set APD_MLFLOW__ARTIFACT_ROOT="
        "s3://<bucket>/<prefix> with a new experiment name (APD_MLFLOW__EXPERIMENT; an experiment keeps its "
        "artifact location), then train and register the model again"
    )
