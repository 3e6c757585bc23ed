"""Publishing one drift run: the Prometheus gauges pushed to a Pushgateway, the MLflow run's tags, parameters,
metrics and files, and report.html + summary.json on S3.

``DriftGauge`` is the one table of the gauges (name, help, labels): ``drift_gauges`` builds the pushed registry from
it, and the dashboard (``helm/dashboards.py``) and the tests of the alert rules take the names from it.
"""

import io
import json
from dataclasses import asdict
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import structlog

from components.common.errors import DataSourceError
from components.common.s3 import S3_ERRORS, describe
from components.common.settings import S3Settings
from components.monitoring.result import DriftResult

log = structlog.get_logger(__name__)

PUSH_JOB = "apd-drift"  # the Pushgateway job
GROUPING_LABELS = ("model_name", "model_version", "endpoint")  # the grouping key: one group per run's target


class DriftGauge(Enum):
    """The gauges of a drift run, in the order they are pushed: (name, help, labels besides the grouping key).

    Without a verdict only ``RECORDS`` and ``LAST_RUN`` are pushed (the group is replaced, so no stale drift numbers
    stay behind).
    """

    RECORDS = ("apd_drift_records", "Usable records in the drift job's window.")
    LAST_RUN = ("apd_drift_last_run_timestamp_seconds", "Unix time of the drift job's last run.")
    SHARE = ("apd_drift_share", "Share of the feature columns that drifted.")
    DETECTED = ("apd_drift_detected", "1 when the drift share reached its threshold.")
    FEATURE_SCORE = ("apd_drift_feature_score", "Evidently drift score of a feature column.", ("feature",))
    FEATURE_DETECTED = ("apd_drift_feature_detected", "1 when a feature column drifted.", ("feature",))
    MEAN_PROBABILITY_SHIFT = ("apd_drift_mean_probability_shift", "Current minus reference mean probability.")
    LOW_CONFIDENCE_RATIO = ("apd_drift_low_confidence_ratio", "Share of low-confidence predictions.")
    LOW_CONFIDENCE_RATIO_REFERENCE = (
        "apd_drift_low_confidence_ratio_reference",
        "Share of low-confidence predictions on the reference.",
    )
    AI_GENERATED_RATIO = ("apd_drift_ai_generated_ratio", "Share of images predicted ai_generated.")
    AI_GENERATED_RATIO_REFERENCE = (
        "apd_drift_ai_generated_ratio_reference",
        "Share of reference images predicted ai_generated.",
    )
    AI_DECLARED_RATIO = (
        "apd_drift_ai_declared_ratio",
        "Share of images whose file declares AI origin (C2PA, IPTC, generator metadata).",
    )
    PROBABILITY_DRIFT_SCORE = ("apd_drift_probability_drift_score", "Evidently drift score of the probability.")
    CONFIDENCE_DROP = ("apd_drift_confidence_drop", "Relative fall of the mean margin to the threshold.")
    ALERT = ("apd_drift_alert", "1 when the drift job's alert fired.")

    def __init__(self, metric: str, doc: str, labels: tuple[str, ...] = ()) -> None:
        self.metric = metric  # the Prometheus name
        self.doc = doc  # its HELP text
        self.labels = labels  # labels besides GROUPING_LABELS


def gauge_values(result: DriftResult) -> dict[DriftGauge, float | dict[str, float]]:
    """The value of each gauge of the run (a labelled gauge: by its one label's value); without a verdict only the
    record count and the time."""
    g = DriftGauge
    values: dict[DriftGauge, float | dict[str, float]] = {
        g.RECORDS: result.records,
        g.LAST_RUN: datetime.fromisoformat(result.run_at).timestamp(),
    }
    s = result.signals
    if s is None:
        return values
    values |= {
        g.SHARE: s.drift_share,
        g.DETECTED: float(s.dataset_drift),
        g.FEATURE_SCORE: {name: d.score for name, d in s.features.items()},
        g.FEATURE_DETECTED: {name: float(d.detected) for name, d in s.features.items()},
        g.MEAN_PROBABILITY_SHIFT: s.mean_probability_shift,
        g.LOW_CONFIDENCE_RATIO: s.low_confidence_ratio,
        g.LOW_CONFIDENCE_RATIO_REFERENCE: s.low_confidence_ratio_reference,
        g.AI_GENERATED_RATIO: s.ai_generated_ratio,
        g.AI_GENERATED_RATIO_REFERENCE: s.ai_generated_ratio_reference,
        g.AI_DECLARED_RATIO: s.ai_declared_ratio,
        g.PROBABILITY_DRIFT_SCORE: s.probability_drift.score,
        g.CONFIDENCE_DROP: s.confidence_drop,
        g.ALERT: float(result.alert),
    }
    return values


def drift_gauges(result: DriftResult) -> Any:
    """A fresh CollectorRegistry with the run's gauges (without a verdict: only the record count and the time)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    values = gauge_values(result)
    for spec in DriftGauge:  # the table's order
        if spec not in values:
            continue
        gauge = Gauge(spec.metric, spec.doc, list(spec.labels), registry=registry)
        value = values[spec]
        if isinstance(value, dict):
            for label, number in value.items():
                gauge.labels(label).set(number)
        else:
            gauge.set(value)
    return registry


def push_gauges(result: DriftResult, url: str) -> None:
    """Replace the group (model_name, model_version, endpoint) of job apd-drift on the Pushgateway."""
    from prometheus_client import push_to_gateway

    key = dict(zip(GROUPING_LABELS, (result.model_name, result.model_version, result.endpoint), strict=True))
    push_to_gateway(url, job=PUSH_JOB, registry=drift_gauges(result), grouping_key=key)
    log.info("drift_gauges_pushed", pushgateway=url, **key)


def scalar_metrics(result: DriftResult) -> dict[str, float]:
    """The run's numbers by name, for MLflow and KFP: counts, alert, every signal, each feature's score."""
    metrics = {"records": float(result.records), "alert": float(result.alert)}
    metrics |= {f"excluded_{reason}": float(n) for reason, n in result.excluded.items()}
    s = result.signals
    if s is not None:
        metrics |= {
            name: float(value)
            for name, value in asdict(s).items()
            if isinstance(value, int | float) and name != "records"  # bools too: dataset_drift
        }
        metrics["probability_drift_score"] = s.probability_drift.score
        metrics |= {f"feature_score_{name}": d.score for name, d in s.features.items()}
    return metrics


def log_run(result: DriftResult) -> None:
    """Tags, window and metrics of the run on the active MLflow run."""
    import mlflow

    tags = {"model_name": result.model_name, "model_version": result.model_version, "endpoint": result.endpoint}
    mlflow.set_tags({**tags, "verdict": result.verdict})
    mlflow.log_params({"window_start": result.window_start, "window_end": result.window_end})
    mlflow.log_metrics(scalar_metrics(result))


def store_outputs(  # noqa: PLR0913, PLR0917 - what is stored, and where
    result: DriftResult, snapshot: Any, s3: S3Settings, bucket: str, folder: str, local: Path
) -> None:
    """summary.json and (with a verdict) Evidently's report.html: written to ``local``, then each put on S3 under
    ``folder`` and logged to the active MLflow run."""
    import mlflow

    files = _write_outputs(result, snapshot, local)
    client = s3.client()
    for path in files:
        _put(client, bucket, f"{folder}/{path.name}", path)
        mlflow.log_artifact(str(path))


def _write_outputs(result: DriftResult, snapshot: Any, folder: Path) -> list[Path]:
    """summary.json and (with a verdict) Evidently's report.html in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    if snapshot is not None:
        report = folder / "report.html"
        snapshot.save_html(str(report))
        files.append(report)
    summary = folder / "summary.json"
    summary.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    return [*files, summary]


def _put(client: Any, bucket: str, key: str, path: Path) -> None:
    data = path.read_bytes()
    content_type = "text/html" if path.suffix == ".html" else "application/json"
    try:
        client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)
    except S3_ERRORS as exc:
        raise DataSourceError(
            f"cannot write s3://{bucket}/{key}: {describe(exc)} (check APD_DRIFT__REPORT_BUCKET and APD_S3__*)"
        ) from exc
