"""``apd``: the AI Product-photo Detector command line.

    apd data demo                      build (or reuse) the offline demo dataset under data/demo
    apd ingest SOURCE --out DIR        ingest a labelled image collection into a versioned dataset
    apd validate DIR                   validate an ingested dataset (exit 1 when it fails)
    apd pipeline run --local --source SOURCE [-p epochs=3 ...]
                                       run the pipeline with KFP's local runner
    apd pipeline compile               write pipelines/training.yaml and batch.yaml for the Kubeflow UI
    apd serve [--model_uri URI] [KServe ModelServer flags]
                                       serve a registered model with KServe (v1/v2 REST, v2 gRPC)
    apd sink [--port 8080] [--host 0.0.0.0]
                                       receive KServe's payload-logger events, write Parquet records to S3
    apd ui [--port 8090] [--model-url URL] [--compare-url URL]
                                       the moderators' web page: drop an image, see the served model's verdict
    apd pipeline submit --host URL --source SOURCE [--schedule CRON]
                                       start a run (or a recurring run) on Kubeflow Pipelines
    apd rollout canary --version N [--percent 10] | canary --percent 50 | promote | rollback [--restore] | status
                                       roll a registered model version out to the KServe InferenceService
    apd drift run [--model-version V | --alias champion] [--endpoint default] [--window-hours 24] [--pushgateway URL]
                                       compare live records with the model's reference (exit 3: drift alert)
    apd predict SOURCE... --out results.csv [--url http://127.0.0.1:8080] [--protocol rest|grpc]
                                       score images (files, folders, ZIPs, s3://, URL lists) with the served model

Configuration comes from ``APD_*`` environment variables (see ``components/common/settings.py``).
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from components.common.errors import DetectorError
from components.common.logging import configure_logging
from components.common.settings import Settings


def _data_demo(args: argparse.Namespace, settings: Settings) -> int:
    from components.common.demo_data import build_demo_dataset

    out = args.out or settings.data_dir / "demo"
    summary = build_demo_dataset(
        out,
        seed=settings.seed,
        crops_per_photo=args.crops_per_photo,
        generator=args.generator,
        first_crop=args.first_crop,
    )
    state = "reused (cached)" if summary.cached else f"built in {summary.seconds:.0f} s"
    print(f"demo dataset {state}: {summary.images} images from {summary.photos} photos in {summary.out_dir}")
    return 0


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from components.ingest import ingest_dataset

    result = ingest_dataset(
        args.source,
        args.out,
        settings.data_dir / "cache",
        settings.splits,
        settings.s3,
        args.image_column,
        args.label_column,
        args.label_map,
    )
    print(f"dataset version {result.summary.dataset_version}: {result.summary.num_images} images in {args.out}")
    return 0


def _validate(args: argparse.Namespace, settings: Settings) -> int:
    from components.validate import validate_dataset, write_report

    report = validate_dataset(args.dataset, settings.images, settings.validation)
    write_report(report, args.dataset / "validation.json", args.dataset / "validation.md")
    print(report.to_markdown())
    return 0 if report.passed else 1


def _pipeline_arguments(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
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


def _pipeline_run(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.local import StageTimes, run_local
    from pipelines.training import training_pipeline

    arguments = _pipeline_arguments(args, settings)
    times = StageTimes()
    try:
        task = run_local(training_pipeline, args.pipeline_root, times, **arguments)
    except RuntimeError as exc:  # kfp.local's report of a failed step; the step's own log above names the cause
        print(f"pipeline failed: {exc}", file=sys.stderr)
        return 1
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
    return 0


def _pipeline_compile(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.kubeflow import COMPILED_BATCH_PIPELINE, COMPILED_PIPELINE, compile_batch_pipeline, compile_pipeline
    from pipelines.training import TrainResources

    resources = TrainResources(gpus=args.train_gpus, cpu=args.train_cpu, memory=args.train_memory)
    print(f"wrote {compile_pipeline(args.out or COMPILED_PIPELINE, resources)}")
    print(f"wrote {compile_batch_pipeline(args.batch_out or COMPILED_BATCH_PIPELINE)}")
    return 0


def _pipeline_submit(args: argparse.Namespace, settings: Settings) -> int:
    from pipelines.kubeflow import COMPILED_PIPELINE, submit

    arguments = _pipeline_arguments(args, settings)
    package = args.package or COMPILED_PIPELINE
    run_id = submit(args.host, arguments, args.experiment, package, args.schedule, args.namespace)
    print(f"{'recurring run' if args.schedule else 'run'} {run_id} submitted to {args.host}")
    return 0


def _rollout(args: argparse.Namespace, settings: Settings) -> int:
    """``apd rollout ACTION``: exit 1 with the reason when the rollout cannot be done."""
    from components.common.errors import DeployError
    from components.rollout import kube_api, rollout, rollout_status

    deploy = settings.deploy
    try:
        api, context_namespace = kube_api()
        namespace = args.namespace or deploy.namespace or context_namespace
        name = args.isvc or deploy.isvc_name
        if args.rollout_command == "status":
            print(rollout_status(api, namespace, name, deploy.default_mode))
            return 0
        version = getattr(args, "version", None)
        percent = getattr(args, "percent", None)
        if version is not None:
            from components.common.tracking import setup_tracking

            setup_tracking(settings.mlflow)
            percent = deploy.canary_percent if percent is None else percent
        result = rollout(
            args.rollout_command,
            api,
            namespace,
            name,
            deploy.default_mode,
            percent=percent,
            model_name=settings.mlflow.model_name,
            model_version=version,
            restore=getattr(args, "restore", False),
            dry_run=args.dry_run,
        )
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.text())
    return 0


def _sink(args: argparse.Namespace, settings: Settings) -> int:
    from serving.sink import run_sink

    run_sink(settings, args.host, args.port)
    return 0


def _ui(args: argparse.Namespace, settings: Settings) -> int:
    from serving.ui import run_ui

    flags = {
        "model_url": args.model_url,
        "model_name": args.model_name,
        "compare_url": args.compare_url,
        "compare_model_name": args.compare_model_name,
    }
    ui = settings.ui.model_copy(update={key: value for key, value in flags.items() if value is not None})
    run_ui(ui, settings.images, args.host, args.port)
    return 0


def _add_ui(commands: Any) -> None:
    """``apd ui``: the moderators' web page, a proxy to the served model's KServe API."""
    ui = commands.add_parser("ui", help="web page for manual checks: drop an image, see the served model's verdict")
    ui.add_argument("--port", type=int, default=8090, help="HTTP port (default: 8090)")
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback; 0.0.0.0 in a pod)")
    ui.add_argument("--model-url", help="model server base URL (default: $APD_UI__MODEL_URL or http://127.0.0.1:8080)")
    ui.add_argument("--model-name", help="served model name (default: $APD_UI__MODEL_NAME or apd-detector)")
    ui.add_argument("--compare-url", help="second model server for the compare view (default: $APD_UI__COMPARE_URL)")
    ui.add_argument("--compare-model-name", help="model name on the compare server (default: --model-name)")
    ui.set_defaults(func=_ui)


def _add_serving(commands: Any) -> None:
    """``apd serve`` (its flags are KServe's, parsed in serving/server.py), ``apd sink`` and ``apd ui``."""
    commands.add_parser("serve", help="serve a model with KServe's ModelServer (see apd serve --help)")
    sink = commands.add_parser("sink", help="the payload sink: KServe logger CloudEvents -> Parquet records on S3")
    sink.add_argument("--port", type=int, default=8080, help="HTTP port (default: 8080)")
    sink.add_argument("--host", default="0.0.0.0", help="interface to bind (default: all)")  # noqa: S104 (a pod)
    sink.set_defaults(func=_sink)
    _add_ui(commands)


def _drift_run(args: argparse.Namespace, settings: Settings) -> int:
    """``apd drift run``: the table of signals and the verdict; exit 3 when the alert fires, else 0."""
    from components.monitoring.job import ALERT_EXIT_CODE, DriftJob, run_drift

    update: dict[str, object] = {}
    if args.window_hours is not None:
        update["window_hours"] = args.window_hours
    if args.pushgateway:
        update["pushgateway_url"] = args.pushgateway
    drift = settings.drift.model_copy(update=update)
    job = DriftJob(
        settings=drift,
        s3=settings.s3,
        mlflow=settings.mlflow,
        sink=settings.sink,
        model_name=settings.mlflow.model_name,
        model_version=args.model_version,
        alias=args.alias,
        endpoint=args.endpoint,
        start=args.start,
        end=args.end,
    )
    result = run_drift(job)
    print(result.to_text(drift))
    return ALERT_EXIT_CODE if result.alert else 0


def _add_drift(commands: Any) -> None:
    """``apd drift run``: the drift job (a CronJob's command, or by hand)."""
    from datetime import datetime

    drift = commands.add_parser("drift", help="drift monitoring of the served model")
    run = drift.add_subparsers(dest="drift_command", required=True).add_parser(
        "run", help="compare the sink's live records with the model version's reference; exit 3 when the alert fires"
    )
    version = run.add_mutually_exclusive_group()
    version.add_argument("--model-version", help="registered model version (default: the one --alias points at)")
    version.add_argument("--alias", default="champion", help="registry alias (default: champion)")
    run.add_argument("--endpoint", default="default", help="InferenceService component: default or canary")
    run.add_argument("--window-hours", type=float, help="the last N hours (default: $APD_DRIFT__WINDOW_HOURS or 24)")
    run.add_argument("--start", type=datetime.fromisoformat, help="window start, ISO 8601 (UTC when no offset)")
    run.add_argument("--end", type=datetime.fromisoformat, help="window end, exclusive (default: now)")
    run.add_argument("--pushgateway", help="Pushgateway URL for the gauges (default: $APD_DRIFT__PUSHGATEWAY_URL)")
    run.set_defaults(func=_drift_run)


def _predict(args: argparse.Namespace, settings: Settings) -> int:
    """``apd predict``: exit 0 when every image has a row (bad images too), 1 when the server stayed unavailable."""
    from components.batch import PredictJob, PredictOptions, run_predict

    options = PredictOptions(
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        max_image_bytes=settings.images.max_bytes,
        retry_errors=args.retry_errors,
    )
    url = args.url or ("127.0.0.1:8081" if args.protocol == "grpc" else "http://127.0.0.1:8080")
    job = PredictJob(
        sources=args.sources,
        out=args.out,
        url=url,
        model=args.model,
        protocol=args.protocol,
        options=options,
        s3=settings.s3,
        fmt=args.format,
        timeout=args.timeout,
    )
    summary = run_predict(job)
    print(summary.text())
    return 1 if summary.stopped else 0


def _add_predict(commands: Any) -> None:
    """``apd predict``: batch scoring through the served model (KServe v2 REST or gRPC)."""
    predict = commands.add_parser("predict", help="score images with the served model into CSV, JSON Lines or Parquet")
    predict.add_argument("sources", nargs="+", help="image files, folders, .zip, s3://bucket/prefix, .txt URL lists")
    predict.add_argument("--out", type=Path, required=True, help="results file (.csv, .jsonl or .parquet); resumed")
    predict.add_argument("--format", choices=["csv", "jsonl", "parquet"], help="default: from --out's extension")
    predict.add_argument("--url", help="model server (default: http://127.0.0.1:8080, gRPC 127.0.0.1:8081)")
    predict.add_argument("--protocol", choices=["rest", "grpc"], default="rest", help="KServe v2 REST or gRPC")
    predict.add_argument("--model", default="apd-detector", help="served model name (default: apd-detector)")
    predict.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: 8)")
    predict.add_argument("--batch-size", type=int, default=8, help="images per request, at most 32 (default: 8)")
    predict.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: 60)")
    predict.add_argument("--retry-errors", action="store_true", help="score again the sources whose row has an error")
    predict.set_defaults(func=_predict)


def _add_source_columns(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-column", default="image", help="Parquet sources: the image column")
    parser.add_argument("--label-column", default="label", help="Parquet sources: the label column")
    parser.add_argument("--label-map", default="", help="Parquet sources: e.g. '0=ai_generated,1=real'")


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 (one flat block per command group reads best)
    parser = argparse.ArgumentParser(prog="apd", description="AI Product-photo Detector.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_serving(commands)

    data = commands.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    demo = data.add_parser("demo", help="build the offline demo dataset (cached)")
    demo.add_argument("--out", type=Path, help="output folder (default: $APD_DATA_DIR/demo)")
    demo.add_argument("--crops-per-photo", type=int, default=16, help="crops taken from each source photo")
    demo.add_argument("--generator", default="mix", help="how ai_generated twins are made: mix (the default: six "
                      "Real-ESRGAN recipes rotated through each photo's crops) or one recipe of demo_data.GENERATORS, "
                      "e.g. anime-2x (the incident drill's new generator)")  # fmt: skip
    demo.add_argument("--first-crop", type=int, default=0, help="skip this many crops per photo (fresh crops)")
    demo.set_defaults(func=_data_demo)

    ingest = commands.add_parser("ingest", help="ingest a labelled image collection")
    ingest.add_argument("source", help="class-folder tree, s3://bucket/prefix, or Parquet file/folder")
    ingest.add_argument("--out", type=Path, required=True, help="output dataset folder")
    _add_source_columns(ingest)
    ingest.set_defaults(func=_ingest)

    validate = commands.add_parser("validate", help="validate an ingested dataset (exit 1 when it fails)")
    validate.add_argument("dataset", type=Path, help="ingested dataset folder")
    validate.set_defaults(func=_validate)

    pipeline = commands.add_parser("pipeline", help="the training pipeline")
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
    run.set_defaults(func=_pipeline_run)
    submit.set_defaults(func=_pipeline_submit)
    comp = pipeline_commands.add_parser("compile", help="write the pipeline YAML that the Kubeflow UI uploads")
    comp.add_argument("--out", type=Path, help="output YAML (default: pipelines/training.yaml)")
    comp.add_argument("--batch-out", type=Path, help="batch-scoring pipeline YAML (default: pipelines/batch.yaml)")
    comp.add_argument("--train-gpus", type=int, default=1, help="GPUs the train step requests (0: none)")
    comp.add_argument("--train-cpu", default="4", help="CPU request/limit of the train step")
    comp.add_argument("--train-memory", default="16G", help="memory request/limit of the train step")
    comp.set_defaults(func=_pipeline_compile)

    rollout = commands.add_parser("rollout", help="roll a registered model version out to KServe as a canary")
    rollout_commands = rollout.add_subparsers(dest="rollout_command", required=True)
    start = rollout_commands.add_parser("canary", help="start a canary of --version, or change the running one's share")
    start.add_argument("--version", help="registered model version (MLflow); omit to keep the running canary's model")
    start.add_argument(
        "--percent", type=int, help="share of requests for the canary, 0-100 (with --version default: 10)"
    )
    promote = rollout_commands.add_parser("promote", help="send all traffic to the canary; it becomes the stable model")
    rollback = rollout_commands.add_parser("rollback", help="send all traffic back to the stable model")
    rollback.add_argument(
        "--restore", action="store_true", help="Serverless: also put the stable model's storageUri back in spec"
    )
    status = rollout_commands.add_parser("status", help="models, revisions and traffic split of the InferenceService")
    for sub in (start, promote, rollback, status):
        sub.add_argument("--isvc", help="InferenceService name (default: $APD_DEPLOY__ISVC_NAME or apd-detector)")
        sub.add_argument(
            "-n", "--namespace", help="its namespace (default: $APD_DEPLOY__NAMESPACE, else the kubeconfig context's)"
        )
        sub.set_defaults(func=_rollout, dry_run=False)
    for sub in (start, promote, rollback):
        sub.add_argument("--dry-run", action="store_true", help="print the patch without sending it")
    _add_drift(commands)
    _add_predict(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # KServe's ModelServer flags: its own parser takes them
        from serving.server import main as serve

        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.logging)
    try:
        return int(args.func(args, settings))
    except DetectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
