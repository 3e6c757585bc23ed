"""Drift: the live records of the payload sink against the served model version's reference statistics.

Inputs: the records the sink wrote for one model version and endpoint (``default`` or ``canary``) in a window,
``s3://<sink bucket>/<sink prefix>/date=YYYY-MM-DD/model=<name>/version=<v>/part-*.parquet`` (records with a
decode error or without a paired response are left out and counted), and ``reference.parquet`` + ``config.json``
of that version's registry artifact (the validation images: the same features, the model's predictions).

Signals:
- feature drift: Evidently's DataDriftPreset over the numeric features and the image format (share of drifted
  columns, dataset drift, a score and a detected flag per feature);
- prediction drift: the mean probability shift (current - reference), the low-confidence ratio and the
  ai_generated ratio (current vs reference), Evidently's ValueDrift on the probability, and ``confidence_drop``:
  the relative fall of the mean margin to the threshold (``ArtifactConfig.margin``) from reference to current;
- provenance: the share of images whose own file declares AI origin (C2PA, IPTC, generator metadata), reported but
  never alerted on: a floor under the pixel model's ai_generated ratio, and stripped metadata proves nothing.

An alert fires when any one of the thresholds in ``DriftSettings`` is passed; fewer usable records than
``min_records`` give no verdict. Outputs: Evidently's HTML report and a JSON summary on S3
(``drift/<model>/<version>/<endpoint>/<window end>/``), an MLflow run in the ``apd-drift`` experiment with the
metrics and both files, and Prometheus gauges pushed to a Pushgateway.

No sampling: Evidently takes 100,000 records with all 11 columns in a few seconds on 2 cores
(``tests/bench/bench_drift.py``).

No ``from __future__ import annotations`` here: KFP reads the component's annotations at definition time.
"""

import io
import json
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog
from kfp.dsl import HTML, Artifact, Metrics, Output
from minio.error import MinioException, S3Error
from urllib3.exceptions import HTTPError

from components.common.artifact import CONFIG_FILE, REFERENCE_FILE, ArtifactConfig, fetch_artifact
from components.common.errors import DataSourceError, InvalidParameterError
from components.common.features import CATEGORICAL_FEATURES, FEATURE_NAMES
from components.common.records import PREDICTION_COLUMNS, RECORD_SCHEMA, join_key, window_prefixes
from components.common.settings import DriftSettings, MlflowSettings, S3Settings
from components.stage import stage

log = structlog.get_logger(__name__)

DRIFT_COLUMNS = (*FEATURE_NAMES, *CATEGORICAL_FEATURES)  # the columns Evidently compares
RECORD_COLUMNS = (*PREDICTION_COLUMNS, *DRIFT_COLUMNS, "decode_error", "paired")  # read from the sink's files
# Read when a sink file has them, else null: files written before the sink recorded the provenance evidence lack them.
OPTIONAL_COLUMNS = {"ai_declared": RECORD_SCHEMA.field("ai_declared").type}
ALERT_EXIT_CODE = 3  # `apd drift run` exits with it when the alert fires
PUSH_JOB = "apd-drift"  # Pushgateway job; grouping key: model_name, model_version, endpoint
READ_THREADS = 8  # parallel S3 object downloads
Verdict = Literal["alert", "ok", "no_verdict"]


@dataclass(frozen=True)
class ColumnDrift:
    """One Evidently stat test: a p-value (K-S, chi-square: lower = more drift) or a distance (Wasserstein,
    Jensen-Shannon, PSI: higher = more drift), depending on ``method``; ``detected`` is comparable across methods."""

    score: float
    detected: bool
    method: str
    threshold: float


@dataclass(frozen=True)
class DriftSignals:
    """Every number the verdict is made of, for one window against the reference."""

    records: int
    reference_records: int
    drift_share: float  # share of the compared feature columns that drifted
    drifted_features: int
    dataset_drift: bool  # drift_share >= drift_share_threshold
    features: dict[str, ColumnDrift]
    skipped_features: list[str]  # columns empty in the reference or in the window: nothing to compare
    mean_probability: float
    mean_probability_reference: float
    mean_probability_shift: float  # current - reference
    low_confidence_ratio: float  # share of confidence == "low"
    low_confidence_ratio_reference: float
    ai_generated_ratio: float  # share predicted ai_generated
    ai_generated_ratio_reference: float
    probability_drift: ColumnDrift
    mean_margin: float  # mean distance to the threshold, relative to the room on that side (ArtifactConfig.margin)
    mean_margin_reference: float
    confidence_drop: float  # (reference - current mean margin) / reference mean margin; > 0: less confident
    ai_declared_ratio: float  # share whose file declares AI origin (provenance; null = not declared); no alert


@dataclass(frozen=True)
class DriftResult:
    """One run of the drift job: the verdict, its signals (None without a verdict) and where the outputs are."""

    model_name: str
    model_version: str
    endpoint: str
    window_start: str  # ISO 8601, UTC, inclusive
    window_end: str  # exclusive
    run_at: str
    verdict: Verdict
    message: str
    records: int  # usable records in the window
    excluded: dict[str, int]  # decode_error, unpaired: records left out
    signals: DriftSignals | None
    alerts: list[str]  # one sentence per passed threshold
    report_uri: str | None  # s3:// of the HTML report (None without a verdict)
    summary_uri: str
    mlflow_run_uri: str
    seconds: dict[str, float] = field(default_factory=dict)  # read, evidently, total

    @property
    def alert(self) -> bool:
        return self.verdict == "alert"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self, settings: DriftSettings) -> str:
        """The signals as a table, then the verdict and where the outputs are."""
        excluded = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in self.excluded.items())
        lines = [
            f"drift of {self.model_name} v{self.model_version}, endpoint {self.endpoint}: "
            f"{self.window_start} -> {self.window_end}",
            f"records: {self.records} usable (left out: {excluded})",
        ]
        s = self.signals
        if s is not None:
            lines[-1] += f"; reference: {s.reference_records} validation images"
            rows = [
                ("drift share", s.drift_share, None, f">= {settings.drift_share_threshold:.2f}", s.dataset_drift),
                (
                    "mean probability",
                    s.mean_probability,
                    s.mean_probability_reference,
                    f"|shift| >= {settings.probability_shift_threshold:.2f}",
                    abs(s.mean_probability_shift) >= settings.probability_shift_threshold,
                ),
                (
                    "probability drift score",
                    s.probability_drift.score,
                    None,
                    f"{s.probability_drift.method} {s.probability_drift.threshold:g}",
                    s.probability_drift.detected,
                ),
                (
                    "confidence drop",
                    s.confidence_drop,
                    None,
                    f"> {settings.confidence_drop_threshold:.2f}",
                    s.confidence_drop > settings.confidence_drop_threshold,
                ),
                ("mean margin", s.mean_margin, s.mean_margin_reference, "", None),
                ("low-confidence ratio", s.low_confidence_ratio, s.low_confidence_ratio_reference, "", None),
                ("ai_generated ratio", s.ai_generated_ratio, s.ai_generated_ratio_reference, "", None),
                ("ai_declared ratio", s.ai_declared_ratio, None, "", None),
            ]
            rows += [
                (f"  {name} ({d.method})", d.score, None, f"{d.threshold:g}", d.detected)
                for name, d in s.features.items()
            ]
            lines += ["", f"{'signal':<34} {'current':>10} {'reference':>10}  {'alert when':<24} state"]
            for name, value, reference, bar, passed in rows:
                ref = "" if reference is None else f"{reference:.4f}"
                state = "" if passed is None else ("DRIFT" if passed else "ok")
                lines.append(f"{name:<34} {value:>10.4f} {ref:>10}  {bar:<24} {state}".rstrip())
            if s.skipped_features:
                lines.append(f"not compared (empty in the reference or the window): {', '.join(s.skipped_features)}")
        lines += ["", f"verdict: {self.verdict.upper().replace('_', ' ')}: {self.message}"]
        if self.report_uri:
            lines.append(f"report:  {self.report_uri}")
        lines += [f"summary: {self.summary_uri}", f"mlflow:  {self.mlflow_run_uri}"]
        return "\n".join(lines)


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


# what the minio client raises: S3 error answers, non-S3 answers (e.g. 403 without credentials), no connection
_S3_ERRORS = (MinioException, HTTPError)


def _describe(exc: Exception) -> str:
    if isinstance(exc, S3Error):
        return f"{exc.code} {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _read_part(client: Any, bucket: str, key: str, start: datetime, end: datetime, endpoint: str) -> pa.Table:
    """The window's records of one endpoint in one sink file: only the columns the job uses (an optional column the
    file lacks comes back null)."""
    response = client.get_object(bucket, key)
    try:
        data = response.read()
    finally:
        response.close()
        response.release_conn()
    schema = pq.read_schema(pa.BufferReader(data))
    missing = sorted({*RECORD_COLUMNS, "time", "endpoint"} - set(schema.names))
    if missing:
        raise DataSourceError(
            f"s3://{bucket}/{key} lacks the columns {missing}: it was not written by the payload sink"
        )
    time_type = schema.field("time").type
    if getattr(time_type, "tz", None) is None:  # naive timestamps hold UTC
        start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    condition = (
        (pc.field("time") >= pa.scalar(start, type=time_type))
        & (pc.field("time") < pa.scalar(end, type=time_type))
        & (pc.field("endpoint") == endpoint)
    )
    optional = [name for name in OPTIONAL_COLUMNS if name in schema.names]
    table = pq.read_table(pa.BufferReader(data), columns=[*RECORD_COLUMNS, *optional], filters=condition)
    for name, column_type in OPTIONAL_COLUMNS.items():
        if name not in optional:
            table = table.append_column(pa.field(name, column_type), pa.nulls(table.num_rows, column_type))
    return table


def read_records(
    s3: S3Settings,
    bucket: str,
    prefix: str,
    model_name: str,
    model_version: str,
    endpoint: str,
    start: datetime,
    end: datetime,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Usable records of one model version and endpoint in [start, end), and how many were left out and why."""
    client = s3.client()
    keys: list[str] = []
    try:
        for folder in window_prefixes(prefix, model_name, model_version, start, end):
            keys += [
                o.object_name
                for o in client.list_objects(bucket, prefix=folder, recursive=True)
                if o.object_name and o.object_name.endswith(".parquet")
            ]
        with ThreadPoolExecutor(READ_THREADS) as pool:
            tables = list(pool.map(lambda key: _read_part(client, bucket, key, start, end, endpoint), keys))
    except _S3_ERRORS as exc:
        raise DataSourceError(
            f"cannot read the sink's records from s3://{bucket}/{prefix} at {s3.endpoint}: {_describe(exc)} "
            "(check APD_SINK__BUCKET, APD_SINK__PREFIX and APD_S3__*)"
        ) from exc
    frame = (
        pa.concat_tables(tables, promote_options="permissive").to_pandas()
        if tables
        else pd.DataFrame({c: pd.Series(dtype=object) for c in (*RECORD_COLUMNS, *OPTIONAL_COLUMNS)})
    )
    decode_error = _is_set(frame["decode_error"])
    unpaired = ~frame["paired"].eq(True) & ~decode_error  # a missing flag counts as unpaired
    excluded = {"decode_error": int(decode_error.sum()), "unpaired": int(unpaired.sum())}
    columns = [*PREDICTION_COLUMNS, *DRIFT_COLUMNS, *OPTIONAL_COLUMNS]
    usable = frame.loc[~decode_error & ~unpaired, columns].reset_index(drop=True)
    log.info("drift_records_read", files=len(keys), records=len(usable), **excluded)
    return usable, excluded


def _is_set(column: pd.Series) -> pd.Series:
    """True where a flag column is set: a True boolean, or a non-empty reason string."""
    if pd.api.types.is_bool_dtype(column):
        return column.astype(bool)
    return column.notna() & (column.astype(str) != "")


def load_reference(model_name: str, model_version: str, dst: Path) -> tuple[pd.DataFrame, ArtifactConfig]:
    """The version's reference statistics and serving config (only these two files are downloaded)."""
    uri = f"models:/{model_name}/{model_version}"
    config = ArtifactConfig.from_dict(json.loads(fetch_artifact(f"{uri}/{CONFIG_FILE}", dst).read_text()))
    reference = pd.read_parquet(fetch_artifact(f"{uri}/{REFERENCE_FILE}", dst))
    missing = sorted({"probability", *DRIFT_COLUMNS} - set(reference.columns))
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


def _drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], settings: DriftSettings
) -> tuple[Any, dict[str, ColumnDrift], float, float]:
    """Evidently's DataDriftPreset over ``columns`` and ValueDrift on the probability: the snapshot, each column's
    test, the drifted share and count."""
    with warnings.catch_warnings():
        # importing Evidently deprecates things inside its own dependencies (numpy.core, litestar): not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import ValueDrift
        from evidently.presets import DataDriftPreset

    numeric = [c for c in columns if c not in CATEGORICAL_FEATURES]
    definition = DataDefinition(
        numerical_columns=[*numeric, "probability"],
        categorical_columns=[c for c in columns if c in CATEGORICAL_FEATURES],
    )
    report = Report(
        [
            DataDriftPreset(
                columns=columns,
                drift_share=settings.drift_share_threshold,
                num_method=settings.num_method,
                cat_method=settings.cat_method,
                threshold=settings.stattest_threshold,
            ),
            ValueDrift(
                column="probability", method=settings.probability_method, threshold=settings.probability_threshold
            ),
        ],
        include_tests=True,
    )
    keep = [*columns, "probability"]
    with warnings.catch_warnings():
        # numpy's divide warnings on constant columns (exif all 0) inside Evidently; its results stay defined
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            current_data=Dataset.from_pandas(current[keep], data_definition=definition),
            reference_data=Dataset.from_pandas(reference[keep], data_definition=definition),
        )
    content = snapshot.dict()
    failed = {t["metric_config"]["metric_id"] for t in content["tests"] if str(t["status"]).endswith("FAIL")}
    tests: dict[str, ColumnDrift] = {}
    share = count = 0.0
    for metric in content["metrics"]:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            share, count = float(metric["value"]["share"]), float(metric["value"]["count"])
        elif config["type"].endswith("ValueDrift"):
            tests[config["column"]] = ColumnDrift(
                score=float(metric["value"]),
                detected=metric["id"] in failed,
                method=str(config["method"]),
                threshold=float(config["threshold"]),
            )
    return snapshot, tests, share, count


def compute_signals(
    reference: pd.DataFrame, current: pd.DataFrame, config: ArtifactConfig, settings: DriftSettings
) -> tuple[DriftSignals, Any]:
    """Feature and prediction drift of ``current`` against ``reference`` (both with the probability, predicted
    label, confidence and feature columns; ``current`` optionally with ``ai_declared``, missing = not declared);
    also returns Evidently's snapshot (for the HTML report)."""
    reference, current = _typed(reference), _typed(current)
    columns = [c for c in DRIFT_COLUMNS if reference[c].notna().any() and current[c].notna().any()]
    skipped = [c for c in DRIFT_COLUMNS if c not in columns]
    snapshot, tests, share, count = _drift_report(reference, current, columns, settings)
    ref_margin = float(reference["probability"].map(config.margin).mean())
    cur_margin = float(current["probability"].map(config.margin).mean())
    ai_label = config.labels[1]
    signals = DriftSignals(
        records=len(current),
        reference_records=len(reference),
        drift_share=share,
        drifted_features=int(count),
        dataset_drift=share >= settings.drift_share_threshold,
        features={c: tests[c] for c in columns},
        skipped_features=skipped,
        mean_probability=float(current["probability"].mean()),
        mean_probability_reference=float(reference["probability"].mean()),
        mean_probability_shift=float(current["probability"].mean() - reference["probability"].mean()),
        low_confidence_ratio=float((current["confidence"] == "low").mean()),
        low_confidence_ratio_reference=float((reference["confidence"] == "low").mean()),
        ai_generated_ratio=float((current["predicted_label"] == ai_label).mean()),
        ai_generated_ratio_reference=float((reference["predicted_label"] == ai_label).mean()),
        probability_drift=tests["probability"],
        mean_margin=cur_margin,
        mean_margin_reference=ref_margin,
        confidence_drop=(ref_margin - cur_margin) / ref_margin if ref_margin > 0 else 0.0,
        ai_declared_ratio=_share_true(current["ai_declared"]) if "ai_declared" in current else 0.0,
    )
    return signals, snapshot


def _share_true(column: pd.Series) -> float:
    """Share of True in a flag column; null (object None or pandas NA) counts as False, in the denominator too."""
    return float(column.eq(True).fillna(False).astype(bool).mean())


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric features and the probability as floats, the format as strings (missing stays missing)."""
    out = frame.copy()
    for column in (*FEATURE_NAMES, "probability"):
        out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
    for column in CATEGORICAL_FEATURES:
        out[column] = out[column].astype(object).where(out[column].notna(), None)
    return out


def alert_reasons(signals: DriftSignals, settings: DriftSettings) -> list[str]:
    """One sentence per threshold the signals pass (empty: no alert)."""
    reasons = []
    if signals.drift_share >= settings.drift_share_threshold:
        drifted = ", ".join(name for name, d in signals.features.items() if d.detected)
        reasons.append(
            f"drift share {signals.drift_share:.2f} >= {settings.drift_share_threshold:.2f} (drifted: {drifted})"
        )
    if signals.confidence_drop > settings.confidence_drop_threshold:
        reasons.append(
            f"confidence drop {signals.confidence_drop:.1%} > {settings.confidence_drop_threshold:.0%} (mean margin "
            f"{signals.mean_margin_reference:.3f} -> {signals.mean_margin:.3f})"
        )
    if abs(signals.mean_probability_shift) >= settings.probability_shift_threshold:
        reasons.append(
            f"mean probability shift {signals.mean_probability_shift:+.3f} (|shift| >= "
            f"{settings.probability_shift_threshold:.2f}; {signals.mean_probability_reference:.3f} -> "
            f"{signals.mean_probability:.3f})"
        )
    if settings.alert_on_probability_drift and signals.probability_drift.detected:
        d = signals.probability_drift
        reasons.append(f"probability distribution drifted ({d.method} {d.score:.4g}, threshold {d.threshold:g})")
    return reasons


@dataclass(frozen=True)
class Assessment:
    """The verdict on one window: without enough records none, else from the signals and the thresholds."""

    verdict: Verdict
    message: str
    signals: DriftSignals | None = None
    alerts: list[str] = field(default_factory=list)
    snapshot: Any = None  # Evidently's snapshot, for the HTML report


def assess(
    reference: pd.DataFrame, current: pd.DataFrame, config: ArtifactConfig, settings: DriftSettings
) -> Assessment:
    """No verdict below ``min_records`` usable records; otherwise the signals and every threshold they pass."""
    if len(current) < settings.min_records:
        return Assessment(
            "no_verdict",
            f"{len(current)} usable records in the window, fewer than min_records={settings.min_records} "
            "(widen --window-hours or lower APD_DRIFT__MIN_RECORDS)",
        )
    signals, snapshot = compute_signals(reference, current, config, settings)
    reasons = alert_reasons(signals, settings)
    message = "; ".join(reasons) if reasons else "no threshold passed"
    return Assessment("alert" if reasons else "ok", message, signals, reasons, snapshot)


def drift_gauges(result: DriftResult) -> Any:
    """A fresh CollectorRegistry with the run's gauges (without a verdict: only the record count and the time)."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, registry=registry).set(value)

    gauge("apd_drift_records", "Usable records in the drift job's window.", result.records)
    run_at = datetime.fromisoformat(result.run_at).timestamp()
    gauge("apd_drift_last_run_timestamp_seconds", "Unix time of the drift job's last run.", run_at)
    s = result.signals
    if s is None:
        return registry
    gauge("apd_drift_share", "Share of the feature columns that drifted.", s.drift_share)
    gauge("apd_drift_detected", "1 when the drift share reached its threshold.", float(s.dataset_drift))
    score = Gauge(
        "apd_drift_feature_score", "Evidently drift score of a feature column.", ["feature"], registry=registry
    )
    detected = Gauge("apd_drift_feature_detected", "1 when a feature column drifted.", ["feature"], registry=registry)
    for name, d in s.features.items():
        score.labels(feature=name).set(d.score)
        detected.labels(feature=name).set(float(d.detected))
    gauge("apd_drift_mean_probability_shift", "Current minus reference mean probability.", s.mean_probability_shift)
    gauge("apd_drift_low_confidence_ratio", "Share of low-confidence predictions.", s.low_confidence_ratio)
    gauge(
        "apd_drift_low_confidence_ratio_reference",
        "Share of low-confidence predictions on the reference.",
        s.low_confidence_ratio_reference,
    )
    gauge("apd_drift_ai_generated_ratio", "Share of images predicted ai_generated.", s.ai_generated_ratio)
    gauge(
        "apd_drift_ai_generated_ratio_reference",
        "Share of reference images predicted ai_generated.",
        s.ai_generated_ratio_reference,
    )
    gauge(
        "apd_drift_ai_declared_ratio",
        "Share of images whose file declares AI origin (C2PA, IPTC, generator metadata).",
        s.ai_declared_ratio,
    )
    gauge("apd_drift_probability_drift_score", "Evidently drift score of the probability.", s.probability_drift.score)
    gauge("apd_drift_confidence_drop", "Relative fall of the mean margin to the threshold.", s.confidence_drop)
    gauge("apd_drift_alert", "1 when the drift job's alert fired.", float(result.alert))
    return registry


def push_gauges(result: DriftResult, url: str) -> None:
    """Replace the group (model_name, model_version, endpoint) of job apd-drift on the Pushgateway."""
    from prometheus_client import push_to_gateway

    key = {"model_name": result.model_name, "model_version": result.model_version, "endpoint": result.endpoint}
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


def run_drift(
    settings: DriftSettings,
    s3: S3Settings,
    mlflow_settings: MlflowSettings,
    sink_bucket: str,
    sink_prefix: str,
    model_name: str,
    model_version: str | None = None,
    alias: str | None = None,
    endpoint: str = "default",
    start: datetime | None = None,
    end: datetime | None = None,
    out_dir: Path | None = None,
) -> DriftResult:
    """Compare one model version's live records on ``endpoint`` with its reference and publish everything.

    The version is ``model_version`` or the one ``alias`` (default champion) points at; the window is [start, end)
    or the last ``settings.window_hours``. Writes the report and summary to S3, logs an MLflow run, and pushes the
    gauges when ``settings.pushgateway_url`` is set. ``out_dir``: also keep report.html and summary.json there.
    """
    import mlflow

    from components.common.tracking import setup_tracking

    began = time.perf_counter()
    run_at = datetime.now(UTC).replace(microsecond=0)
    window_start, window_end = window(settings.window_hours, start, end)
    experiment = setup_tracking(mlflow_settings.model_copy(update={"experiment": settings.experiment}))
    version = resolve_version(model_name, model_version, alias)
    structlog.contextvars.bind_contextvars(model_version=version)
    current, excluded = read_records(
        s3, sink_bucket, sink_prefix, model_name, version, endpoint, window_start, window_end
    )
    seconds = {"read": time.perf_counter() - began}
    # named after the window's end: a re-run of the same window (a retried CronJob) replaces its report
    folder = join_key("drift", model_name, version, endpoint, window_end.strftime("%Y%m%dT%H%M%SZ"))
    bucket = settings.report_bucket or sink_bucket
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
        mlflow.set_tags({"model_name": model_name, "model_version": version, "endpoint": endpoint, "verdict": verdict})
        mlflow.log_params({"window_start": result.window_start, "window_end": result.window_end})
        mlflow.log_metrics(scalar_metrics(result))
        result.seconds["total"] = time.perf_counter() - began  # up to the outputs; the returned result: all
        with tempfile.TemporaryDirectory() as tmp:
            files = _write_outputs(result, snapshot, out_dir or Path(tmp))
            client = s3.client()
            for path in files:
                _put(client, bucket, f"{folder}/{path.name}", path)
                mlflow.log_artifact(str(path))
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
    except _S3_ERRORS as exc:
        raise DataSourceError(
            f"cannot write s3://{bucket}/{key}: {_describe(exc)} (check APD_DRIFT__REPORT_BUCKET and APD_S3__*)"
        ) from exc


@stage
def drift(
    metrics: Output[Metrics],
    report: Output[HTML],
    summary: Output[Artifact],
    model_version: str = "",
    alias: str = "champion",
    endpoint: str = "default",
    window_hours: float = 24.0,
    window_start: str = "",
    window_end: str = "",
    pushgateway_url: str = "",
) -> bool:
    """Compare the live records of a served model version with its reference statistics (Evidently).

    Args:
        metrics: Drift share, per-feature scores, the prediction signals, the record count and the alert (0/1).
        report: Evidently's HTML report (a short note when there were too few records for a verdict).
        summary: JSON with the verdict, every signal, the window and where the report and MLflow run are.
        model_version: Registered version to check; empty: the one ``alias`` points at.
        alias: Registry alias used when no version is given.
        endpoint: ``default`` or ``canary``: the InferenceService component whose records are compared.
        window_hours: Records of the last this many hours are compared.
        window_start: ISO 8601 start of an explicit window (a backfill), UTC when it has no offset; empty: the
            window is the last ``window_hours`` before ``window_end``.
        window_end: ISO 8601 end of the window (exclusive); empty: now.
        pushgateway_url: Prometheus Pushgateway for the gauges; empty: ``APD_DRIFT__PUSHGATEWAY_URL`` (or none).

    Returns:
        Whether the drift alert fired.
    """
    import json
    import shutil
    import tempfile
    from datetime import datetime
    from pathlib import Path

    from components.common.logging import configure_logging
    from components.common.settings import Settings
    from components.drift import run_drift, scalar_metrics

    settings = Settings()
    configure_logging(settings.logging)
    update: dict[str, object] = {"window_hours": window_hours}
    if pushgateway_url:
        update["pushgateway_url"] = pushgateway_url
    drift_settings = settings.drift.model_copy(update=update)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_drift(
            drift_settings,
            settings.s3,
            settings.mlflow,
            settings.sink.bucket,
            settings.sink.prefix,
            settings.mlflow.model_name,
            model_version or None,
            alias,
            endpoint,
            datetime.fromisoformat(window_start) if window_start else None,
            datetime.fromisoformat(window_end) if window_end else None,
            out_dir=Path(tmp),
        )
        html = Path(tmp) / "report.html"
        if html.exists():
            shutil.copyfile(html, report.path)
        else:
            Path(report.path).write_text(f"<html><body><p>No verdict: {result.message}</p></body></html>\n")
    for name, value in scalar_metrics(result).items():
        metrics.log_metric(name, value)
    Path(summary.path).write_text(json.dumps(result.to_dict(), indent=2))
    summary.metadata.update({"verdict": result.verdict, "model_version": result.model_version})
    return result.alert
