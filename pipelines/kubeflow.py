"""Compile the training and batch-scoring pipelines for the Kubeflow UI, submit runs, parse run parameters."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from kfp import compiler
from kfp.dsl.graph_component import GraphComponent

from components.common.errors import InvalidParameterError
from pipelines.batch import batch_scoring_pipeline
from pipelines.training import PIPELINE_NAME, TrainResources, build_training_pipeline

log = structlog.get_logger(__name__)

COMPILED_PIPELINE = Path(__file__).with_name("training.yaml")  # committed; CI fails when it is stale
COMPILED_BATCH_PIPELINE = Path(__file__).with_name("batch.yaml")  # the same
_COERCE: dict[str, Callable[[str], Any]] = {
    "Integer": int,
    "Float": float,
    "String": str,
    "Boolean": lambda v: v.lower() in ("1", "true", "yes"),
}


def compile_pipeline(path: Path = COMPILED_PIPELINE, resources: TrainResources | None = None) -> Path:
    """Write the pipeline's IR YAML (what the Kubeflow UI uploads) to ``path``."""
    compiler.Compiler().compile(build_training_pipeline(resources or TrainResources()), str(path))
    return path


def compile_batch_pipeline(path: Path = COMPILED_BATCH_PIPELINE) -> Path:
    """Write the batch-scoring pipeline's IR YAML to ``path``."""
    compiler.Compiler().compile(batch_scoring_pipeline, str(path))
    return path


def parse_params(pipeline: GraphComponent, pairs: list[str]) -> dict[str, Any]:
    """``["epochs=3", "lr=0.0005"]`` -> typed run arguments, checked against the pipeline's inputs."""
    inputs = pipeline.component_spec.inputs or {}
    arguments: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in inputs:
            raise InvalidParameterError(
                f"bad parameter {pair!r}: expected NAME=VALUE with NAME one of {sorted(inputs)}"
            )
        try:
            arguments[name] = _COERCE[inputs[name].type](value)
        except ValueError as exc:
            raise InvalidParameterError(f"parameter {name} must be {inputs[name].type}, got {value!r}") from exc
    return arguments


def submit(  # noqa: PLR0913, PLR0917 - kfp.Client's run options, one each
    host: str,
    arguments: dict[str, Any],
    experiment: str,
    package: Path = COMPILED_PIPELINE,
    schedule: str | None = None,
    namespace: str | None = None,
) -> str:
    """Create a run (or, with a cron ``schedule``, a recurring run) of ``package`` on a Kubeflow Pipelines host.

    Returns:
        The run id, or the recurring run id.
    """
    import kfp

    client = kfp.Client(host=host, namespace=namespace)
    if schedule is None:
        run = client.create_run_from_pipeline_package(
            str(package), arguments=arguments, experiment_name=experiment, namespace=namespace
        )
        log.info("run_submitted", host=host, run_id=run.run_id, experiment=experiment)
        return str(run.run_id)
    experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
    recurring = client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=f"{PIPELINE_NAME}-scheduled",
        cron_expression=schedule,
        params=arguments,
        pipeline_package_path=str(package),
        no_catchup=True,
    )
    log.info("recurring_run_submitted", host=host, recurring_run_id=recurring.recurring_run_id, cron=schedule)
    return str(recurring.recurring_run_id)
