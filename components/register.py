"""Register: put an evaluated model into the MLflow Model Registry, with everything needed to serve and watch it.

The model version carries, as tags: training date, dataset version, git commit, every hyperparameter, every
test metric and the decision threshold. Its artifact folder (see ``common.artifact``) holds the weights, the
serving config, the metrics and the drift reference statistics (per-image features and predictions of the
validation split). Alias ``challenger`` moves to every new version; ``champion`` moves to it when it beats the
current champion on the same test split, or when there is none.
"""

import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import structlog
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.common.artifact import REFERENCE_FILE, ArtifactConfig, write_artifact
from components.common.dataset import split_rows
from components.common.dataset_files import DatasetImages
from components.common.errors import DataSourceError
from components.common.features import image_features
from components.common.images import decode_image
from components.common.metrics import flat_metrics
from components.common.model import load_checkpoint
from components.common.model_config import CHECKPOINT_FILE
from components.common.settings import ImageLimits
from components.stage import stage

log = structlog.get_logger(__name__)

ARTIFACT_PATH = "detector"  # where the artifact folder lives inside the MLflow run


@dataclass(frozen=True)
class Registration:
    """The registered version and the aliases that now point at it."""

    model_name: str
    version: str
    aliases: list[str]
    source: str


def reference_statistics(
    dataset: DatasetImages, val_predictions: dict[str, float], config: ArtifactConfig, limits: ImageLimits
) -> pd.DataFrame:
    """The drift reference, one row per validation image: the features (the function the sink and the drift job
    use), the true ``label``, and the model's ``probability``, ``predicted_label`` and ``confidence``."""
    rows = []
    val = list(split_rows(dataset.manifest(), "val").itertuples())
    for row, decoded in zip(val, dataset.read_each(val, functools.partial(decode_image, limits=limits)), strict=True):
        if isinstance(decoded, DataSourceError):
            raise decoded
        probability = val_predictions[str(row.sha256)]
        rows.append(
            {
                **image_features(decoded),
                "label": row.label,
                "probability": probability,
                "predicted_label": config.label(probability),
                "confidence": config.confidence(probability),
            }
        )
    return pd.DataFrame(rows)


def git_commit(configured: str) -> str:
    """The configured commit (set in images at build time), else the local checkout's, else 'unknown'."""
    if configured:
        return configured
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10)  # noqa: S607
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


def register_model(
    checkpoint_dir: Path,
    exported_dir: Path,
    dataset: DatasetImages,
    evaluation: dict[str, Any],
    run_id: str,
    model_name: str,
    limits: ImageLimits,
    commit: str,
) -> Registration:
    """Assemble the artifact, log it to run ``run_id``, create the model version and move the aliases."""
    model, extra = load_checkpoint(checkpoint_dir / CHECKPOINT_FILE)
    dataset_version = str(extra["dataset_version"])
    variants = evaluation["variants"]
    config = ArtifactConfig(
        model=model.config,
        threshold=float(evaluation["threshold"]),
        dataset_version=dataset_version,
        variants=tuple(name for name, v in variants.items() if v["enabled"]),
        temperature=float(evaluation["temperature"]),
    )
    # The version's own figures (the champion's, scored in the same evaluation, stay on the run).
    metrics = {k: v for k, v in flat_metrics(evaluation).items() if not k.startswith("champion_")}
    client = mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / ARTIFACT_PATH
        shutil.copytree(exported_dir, folder)  # model.onnx, model.int8.onnx from the evaluate step
        write_artifact(folder, checkpoint_dir / CHECKPOINT_FILE, config, metrics)
        reference = reference_statistics(dataset, evaluation["val_predictions"], config, limits)
        reference.to_parquet(folder / REFERENCE_FILE)
        with mlflow.start_run(run_id=run_id):
            mlflow.log_artifacts(str(folder), artifact_path=ARTIFACT_PATH)
            source = mlflow.get_artifact_uri(ARTIFACT_PATH)
    tags = {
        "training_date": datetime.now(UTC).isoformat(timespec="seconds"),
        "dataset_version": dataset_version,
        "git_commit": commit,
        "threshold": f"{config.threshold:.6f}",
        **{f"param.{k}": str(v) for k, v in extra["train_config"].items()},
        **{f"metric.{k}": f"{v:.6f}" for k, v in metrics.items()},
    }
    if client.search_registered_models(filter_string=f"name = '{model_name}'") == []:
        client.create_registered_model(model_name, description="Probability that a product photo is AI-generated.")
    version = client.create_model_version(model_name, source=source, run_id=run_id, tags=tags)
    aliases = ["challenger"]
    client.set_registered_model_alias(model_name, "challenger", version.version)
    if evaluation["beats_champion"]:
        client.set_registered_model_alias(model_name, "champion", version.version)
        aliases.append("champion")
    log.info("model_registered", model_name=model_name, version=version.version, aliases=aliases, source=source)
    return Registration(model_name, str(version.version), aliases, source)


@stage
def register(
    dataset: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    exported: Input[Model],
    run_id: str,
    registered: Output[Artifact],
) -> str:
    """Register the evaluated model in the MLflow Model Registry and move the ``challenger``/``champion`` aliases.

    Args:
        dataset: The validated dataset (its validation split becomes the drift reference).
        model: The trained checkpoint folder.
        evaluation: The evaluate step's JSON (threshold, metrics, validation predictions, champion comparison,
            serving variants).
        exported: The evaluate step's ONNX exports (fp32 and int8), copied into the artifact.
        run_id: MLflow run that receives the artifact folder.
        registered: JSON with the model name, version, aliases and artifact source URI.

    Returns:
        The registered model version.
    """
    import json
    from dataclasses import asdict
    from pathlib import Path

    from components.common.dataset_files import DatasetImages
    from components.common.logging import configure_logging
    from components.common.settings import Settings
    from components.common.tracking import setup_tracking
    from components.register import git_commit, register_model

    settings = Settings()
    configure_logging(settings.logging)
    setup_tracking(settings.mlflow)
    result = register_model(
        Path(model.path),
        Path(exported.path),
        DatasetImages(dataset.path, settings.s3),
        json.loads(Path(evaluation.path).read_text()),
        run_id,
        settings.mlflow.model_name,
        settings.images,
        git_commit(settings.git_commit),
    )
    Path(registered.path).write_text(json.dumps(asdict(result)))
    registered.metadata.update({**asdict(result), "dataset_version": dataset.metadata["dataset_version"]})
    return result.version
