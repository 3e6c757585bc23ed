"""``apd pipeline run | compile | submit``: the training pipeline, under KFP's local runner or on Kubeflow."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from components.cli.command import AddParser
from components.cli.exits import PipelineRunError
from components.common.settings import Settings


def pipeline_arguments(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Run arguments: the source, the validation rules and gate from settings, then every ``--param``."""
    from pipelines.kubeflow import parse_params
    from pipelines.training import training_pipeline

    rules, gate = settings.validation, settings.gate
    return {
        "source": args.source,
        "max_class_ratio": rules.max_class_ratio,
        "warn_class_ratio": rules.warn_class_ratio,
        "min_images_per_split": rules.min_images_per_split,
        "min_accuracy": gate.min_accuracy,
        "min_f1": gate.min_f1,
        "max_auc_drop": gate.max_auc_drop,
        "max_fpr": gate.max_fpr,
        "seed": settings.seed,
        **parse_params(training_pipeline, args.param),
    }


def pipeline_run(args: argparse.Namespace, settings: Settings) -> None:
    """``apd pipeline run --local``: what the run registered, its stage times and where its outputs are."""
    from pipelines.local import StageTimes, run_local
    from pipelines.training import training_pipeline

    arguments = pipeline_arguments(args, settings)
    times = StageTimes()
    try:
        task = run_local(training_pipeline, args.pipeline_root, times, **arguments)
    except RuntimeError as exc:  # kfp.local's report of a failed step; the step's own log above names the cause
        raise PipelineRunError(str(exc)) from exc
    run_dir = Path(task.output.path).parent.parent
    registered = json.loads((run_dir / "register" / "registered").read_text())
    print((run_dir / "validate" / "summary").read_text())
    print(Path(task.output.path).read_text())
    aliases = ", ".join(registered["aliases"])
    print(f"registered {registered['model_name']} version {registered['version']} (aliases: {aliases})")
    print("stage times: " + ", ".join(f"{name} {sec:.0f} s" for name, sec in times.seconds.items()), end="")
    print(f" (total {sum(times.seconds.values()):.0f} s)")
    print(f"step outputs: {run_dir}")
    print(f"MLflow UI:    {sys.executable} -m mlflow ui --backend-store-uri {settings.mlflow.tracking_uri}")


def pipeline_compile(args: argparse.Namespace, settings: Settings) -> None:
    from pipelines.kubeflow import COMPILED_BATCH_PIPELINE, COMPILED_PIPELINE, compile_batch_pipeline, compile_pipeline
    from pipelines.training import TrainResources

    resources = TrainResources(gpus=args.train_gpus, cpu=args.train_cpu, memory=args.train_memory)
    print(f"wrote {compile_pipeline(args.out or COMPILED_PIPELINE, resources)}")
    print(f"wrote {compile_batch_pipeline(args.batch_out or COMPILED_BATCH_PIPELINE)}")


def pipeline_submit(args: argparse.Namespace, settings: Settings) -> None:
    from pipelines.kubeflow import COMPILED_PIPELINE, submit

    arguments = pipeline_arguments(args, settings)
    package = args.package or COMPILED_PIPELINE
    run_id = submit(args.host, arguments, args.experiment, package, args.schedule, args.namespace)
    print(f"{'recurring run' if args.schedule else 'run'} {run_id} submitted to {args.host}")


def add_commands(add_parser: AddParser) -> None:
    pipeline = add_parser("pipeline", help="the training pipeline")
    pipeline_commands = pipeline.add_subparsers(dest="pipeline_command", required=True)
    run = pipeline_commands.add_parser("run", help="run the pipeline with KFP's local runner")
    run.add_argument("--local", action="store_true", required=True, help="run with KFP's local runner")
    run.add_argument("--pipeline-root", type=Path, default=Path("local_outputs"), help="where outputs land")
    submit = pipeline_commands.add_parser("submit", help="submit a run (or a recurring run) to Kubeflow Pipelines")
    submit.add_argument("--host", required=True, help="Kubeflow Pipelines API, e.g. http://localhost:8080")
    submit.add_argument("--experiment", default="apd", help="experiment name (created when missing)")
    submit.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    submit.add_argument("--schedule", help="cron expression for a recurring retrain, e.g. '0 0 3 * * 1'")
    submit.add_argument("--package", type=Path, help="compiled pipeline YAML (default: pipelines/training.yaml)")
    for sub in (run, submit):
        sub.add_argument("--source", required=True, help="dataset source (see apd ingest)")
        sub.add_argument(
            "-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline parameter, repeatable"
        )
    run.set_defaults(func=pipeline_run)
    submit.set_defaults(func=pipeline_submit)
    comp = pipeline_commands.add_parser("compile", help="write the pipeline YAML that the Kubeflow UI uploads")
    comp.add_argument("--out", type=Path, help="output YAML (default: pipelines/training.yaml)")
    comp.add_argument("--batch-out", type=Path, help="batch-scoring pipeline YAML (default: pipelines/batch.yaml)")
    comp.add_argument("--train-gpus", type=int, default=1, help="GPUs the train step requests (0: none)")
    comp.add_argument("--train-cpu", default="4", help="CPU request/limit of the train step")
    comp.add_argument("--train-memory", default="16G", help="memory request/limit of the train step")
    comp.set_defaults(func=pipeline_compile)
