"""One drift run end to end: resolve the model version, read the window's records, assess them against the
version's reference, publish the outputs (``apd drift run``, the KFP ``drift`` step, the incident drill)."""

import json
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import structlog

from components.common.artifact import CONFIG_FILE, REFERENCE_FILE, ArtifactConfig, fetch_artifact
from components.common.errors import DataSourceError, InvalidParameterError
from components.common.records import FEATURE_COLUMNS, join_key
from components.common.settings import DriftSettings, MlflowSettings, S3Settings, Settings, SinkSettings
from components.monitoring.publish import log_run, push_gauges, store_outputs
from components.monitoring.records import read_records
from components.monitoring.result import DriftResult
from components.monitoring.signals import assess

log = structlog.get_logger(__name__)

ALERT_EXIT_CODE = 3  # `apd drift run` exits with it when the alert fires


@dataclass(frozen=True)
class DriftJob:
    """What one drift run compares and where it reads and writes.

    The version is ``model_version`` or the one ``alias`` (default champion) points at; the window is [start, end)
    or the last ``settings.window_hours`` before ``end`` (default: now). ``out_dir``: also keep report.html and
    summary.json there.
    """

    settings: DriftSettings
    s3: S3Settings
    mlflow: MlflowSettings
    sink: SinkSettings  # the bucket and prefix of the records (and of the outputs, without a report bucket)
    model_name: str
    model_version: str | None = None
    alias: str | None = None
    endpoint: str = "default"  # the InferenceService component: default or canary
    start: datetime | None = None
    end: datetime | None = None
    out_dir: Path | None = None


def drift_job(settings: Settings, window_hours: float | None, pushgateway_url: str | None, **what: Any) -> DriftJob:
    """A job on the stores and registered model of ``settings``, with its drift settings but the run's own window
    length and Pushgateway when given; ``what``: the fields that pick the version, endpoint and window, and out_dir."""
    update: dict[str, object] = {}
    if window_hours is not None:
        update["window_hours"] = window_hours
    if pushgateway_url:
        update["pushgateway_url"] = pushgateway_url
    drift = settings.drift.model_copy(update=update)
    return DriftJob(drift, settings.s3, settings.mlflow, settings.sink, settings.mlflow.model_name, **what)


def window(hours: float, start: datetime | None = None, end: datetime | None = None) -> tuple[datetime, datetime]:
    """The UTC window [start, end): explicit bounds, or the last ``hours`` before ``end`` (default: now).
    Naive datetimes are taken as UTC."""
    end = _utc(end) if end is not None else datetime.now(UTC)
    start = _utc(start) if start is not None else end - timedelta(hours=hours)
    if start >= end:
        raise InvalidParameterError(f"the window start {start.isoformat()} is not before its end {end.isoformat()}")
    return start, end


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def load_reference(model_name: str, model_version: str, dst: Path) -> tuple[pd.DataFrame, ArtifactConfig]:
    """The version's reference statistics and serving config (only these two files are downloaded)."""
    uri = f"models:/{model_name}/{model_version}"
    config = ArtifactConfig.from_dict(json.loads(fetch_artifact(f"{uri}/{CONFIG_FILE}", dst).read_text()))
    reference = pd.read_parquet(fetch_artifact(f"{uri}/{REFERENCE_FILE}", dst))
    missing = sorted({"probability", *FEATURE_COLUMNS} - set(reference.columns))
    if missing:
        raise DataSourceError(f"{uri}/{REFERENCE_FILE} lacks {missing}: register the model again to rebuild it")
    if "predicted_label" not in reference:  # references from before predictions were stored: derive them
        reference["predicted_label"] = reference["probability"].map(config.label)
    if "confidence" not in reference:
        reference["confidence"] = reference["probability"].map(config.confidence)
    return reference, config


def resolve_version(model_name: str, version: str | None, alias: str | None) -> str:
    """The registered version number that ``version`` or ``alias`` names."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        if version:
            return str(client.get_model_version(model_name, version).version)
        return str(client.get_model_version_by_alias(model_name, alias or "champion").version)
    except MlflowException as exc:
        what = f"version {version}" if version else f"alias @{alias or 'champion'}"
        raise InvalidParameterError(f"registered model {model_name!r} has no {what}: {exc.message}") from exc


def run_drift(job: DriftJob) -> DriftResult:
    """Compare one model version's live records on ``job.endpoint`` with its reference and publish everything.

    Writes the report and summary to S3, logs an MLflow run, and pushes the gauges when
    ``job.settings.pushgateway_url`` is set.
    """
    import mlflow

    from components.common.tracking import setup_tracking

    settings, model_name, endpoint = job.settings, job.model_name, job.endpoint
    began = time.perf_counter()
    run_at = datetime.now(UTC).replace(microsecond=0)
    window_start, window_end = window(settings.window_hours, job.start, job.end)
    experiment = setup_tracking(job.mlflow.model_copy(update={"experiment": settings.experiment}))
    version = resolve_version(model_name, job.model_version, job.alias)
    structlog.contextvars.bind_contextvars(model_version=version)
    current, excluded = read_records(
        job.s3, job.sink.bucket, job.sink.prefix, model_name, version, endpoint, window_start, window_end
    )
    seconds = {"read": time.perf_counter() - began}
    # named after the window's end: a re-run of the same window (a retried CronJob) replaces its report
    folder = join_key("drift", model_name, version, endpoint, window_end.strftime("%Y%m%dT%H%M%SZ"))
    bucket = settings.report_bucket or job.sink.bucket
    with tempfile.TemporaryDirectory() as tmp:
        reference, config = load_reference(model_name, version, Path(tmp))
    evidently_began = time.perf_counter()
    assessment = assess(reference, current, config, settings)
    if assessment.signals is not None:
        seconds["evidently"] = time.perf_counter() - evidently_began
    verdict, snapshot = assessment.verdict, assessment.snapshot
    with mlflow.start_run(experiment_id=experiment, run_name=f"{model_name}-v{version}-{endpoint}") as run:
        result = DriftResult(
            model_name=model_name,
            model_version=version,
            endpoint=endpoint,
            window_start=window_start.isoformat(),
            window_end=window_end.isoformat(),
            run_at=run_at.isoformat(),
            verdict=verdict,
            message=assessment.message,
            records=len(current),
            excluded=excluded,
            signals=assessment.signals,
            alerts=assessment.alerts,
            report_uri=f"s3://{bucket}/{folder}/report.html" if snapshot is not None else None,
            summary_uri=f"s3://{bucket}/{folder}/summary.json",
            mlflow_run_uri=f"runs:/{run.info.run_id}",
            seconds=seconds,
        )
        log_run(result)
        result.seconds["total"] = time.perf_counter() - began  # up to the outputs; the returned result: all
        with tempfile.TemporaryDirectory() as tmp:
            store_outputs(result, snapshot, job.s3, bucket, folder, job.out_dir or Path(tmp))
    if settings.pushgateway_url:
        push_gauges(result, settings.pushgateway_url)
    result.seconds["total"] = time.perf_counter() - began
    log.info(
        "drift_done",
        verdict=verdict,
        records=result.records,
        alerts=result.alerts,
        summary=result.summary_uri,
        seconds={k: round(v, 2) for k, v in result.seconds.items()},
    )
    return result
