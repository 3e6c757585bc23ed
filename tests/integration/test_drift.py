"""The drift job end to end: records in the sink's Parquet schema on a real S3 server (moto on loopback), a real
registered model version (MLflow on SQLite) whose reference.parquet is synthetic, the Evidently report and summary
back on S3, the MLflow run, `apd drift run`'s exit code, and the gauges read back from a real Pushgateway."""

import json
import subprocess
import time
import urllib.request
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pyarrow as pa
import pytest
from minio import Minio
from prometheus_client.parser import text_string_to_metric_families

from components.common.artifact import REFERENCE_FILE
from components.common.records import RECORD_SCHEMA
from components.common.settings import DriftSettings, MlflowSettings, S3Settings
from components.monitoring.job import DriftJob, run_drift
from components.monitoring.publish import GROUPING_LABELS, PUSH_JOB, DriftGauge
from components.monitoring.result import DriftResult
from tests.helpers.artifacts import detector, package_artifact, register_artifact
from tests.helpers.net import free_port
from tests.helpers.servers import MODEL
from tests.helpers.sink_records import LEGACY_SCHEMA, SINK, put_records, sink_table
from tests.unit.monitoring.synthetic import NEW_UPLOAD_TOOL, records

pytestmark = pytest.mark.integration

DAY = datetime(2026, 11, 1, tzinfo=UTC)  # the quiet day; the next one is the drifted day
PUSHGATEWAY = Path("/usr/bin/prometheus-pushgateway")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> MlflowSettings:
    """MLflow on SQLite with version 1 of MODEL (alias champion): a real small artifact, synthetic reference."""
    tmp = tmp_path_factory.mktemp("registry")
    tracking = MlflowSettings(tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifact_root=str(tmp / "artifacts"))
    folder = tmp / "detector"
    config = package_artifact(detector(), folder, threshold=0.45, metrics={"test_accuracy": 0.9}, onnx=False)
    records(600, seed=1, config=config).to_parquet(folder / REFERENCE_FILE)  # the validation images' stand-in
    register_artifact(tracking, folder, MODEL)
    return tracking


@pytest.fixture
def s3(s3_server: S3Settings) -> S3Settings:
    """The S3 server, emptied: moto keeps its buckets per process, across servers."""
    request = urllib.request.Request(f"http://{s3_server.endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    return s3_server


@pytest.fixture
def two_days(s3: S3Settings) -> S3Settings:
    """Day 1: default endpoint like the reference (+ 7 decode errors, 5 unpaired, 300 files that declare AI
    origin), canary drifted (in files without the provenance columns); day 2: drifted."""
    quiet = records(3000, seed=2)
    table = sink_table(quiet, DAY, 24, "default", "1", seed=2).to_pandas()
    table.loc[:6, "decode_error"] = "unsupported_format"
    table.loc[7:11, "paired"] = False
    table.loc[100:399, ["ai_declared", "c2pa", "verdict_source"]] = [True, "valid", "provenance"]
    put_records(s3, pa.Table.from_pandas(table, schema=RECORD_SCHEMA, preserve_index=False))
    canary = sink_table(records(1000, seed=3, **NEW_UPLOAD_TOOL), DAY, 24, "canary", "1", seed=3)
    put_records(s3, canary, schema=LEGACY_SCHEMA)
    drifted = records(3000, seed=4, **NEW_UPLOAD_TOOL)
    put_records(s3, sink_table(drifted, DAY + timedelta(days=1), 24, "default", "1", seed=4))
    return s3


def _run(
    s3: S3Settings,
    tracking: MlflowSettings,
    start: datetime,
    endpoint: str = "default",
    model_version: str | None = None,
    settings: DriftSettings | None = None,
) -> DriftResult:
    """One day's drift run: the version ``model_version``, or champion's."""
    drift = settings or DriftSettings()
    end = start + timedelta(days=1)
    job = DriftJob(drift, s3, tracking, SINK, MODEL, model_version, "champion", endpoint, start, end)
    return run_drift(job)


def _s3_text(s3: S3Settings, uri: str) -> str:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    response = Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False).get_object(bucket, key)
    try:
        return response.read().decode()
    finally:
        response.close()
        response.release_conn()


def test_alert_only_on_the_drifted_window(two_days: S3Settings, registry: MlflowSettings) -> None:
    quiet = _run(two_days, registry, DAY)
    assert quiet.verdict == "ok", quiet.message
    assert quiet.records == 3000 - 12
    assert quiet.excluded == {"decode_error": 7, "unpaired": 5}
    assert quiet.signals is not None
    assert quiet.signals.ai_declared_ratio == pytest.approx(300 / (3000 - 12))
    assert quiet.model_version == "1"  # resolved from @champion

    drifted = _run(two_days, registry, DAY + timedelta(days=1))
    assert drifted.verdict == "alert"
    assert drifted.signals is not None
    assert drifted.signals.dataset_drift
    assert drifted.alerts[0].startswith("drift share")

    canary = _run(two_days, registry, DAY, endpoint="canary", model_version="1")
    assert canary.verdict == "alert"
    assert canary.records == 1000  # only the canary's records
    assert canary.signals is not None
    assert canary.signals.ai_declared_ratio == 0.0  # files from before the provenance columns: nothing declared

    # the report and the summary on S3, under drift/<model>/<version>/<endpoint>/<window end>/
    assert drifted.report_uri == f"s3://{SINK.bucket}/drift/{MODEL}/1/default/20261103T000000Z/report.html"
    assert "<html" in _s3_text(two_days, drifted.report_uri or "").lower()
    summary = json.loads(_s3_text(two_days, drifted.summary_uri))
    assert summary["verdict"] == "alert"
    assert summary["signals"]["features"]["brightness"]["detected"] is True
    assert summary["mlflow_run_uri"] == drifted.mlflow_run_uri
    assert set(summary["seconds"]) == {"read", "evidently", "total"}

    # the MLflow run: apd-drift experiment, tags, metrics and both files
    run = mlflow.get_run(drifted.mlflow_run_uri.removeprefix("runs:/"))
    assert mlflow.get_experiment(run.info.experiment_id).name == "apd-drift"
    assert {k: run.data.tags[k] for k in ("model_name", "model_version", "endpoint", "verdict")} == {
        "model_name": MODEL,
        "model_version": "1",
        "endpoint": "default",
        "verdict": "alert",
    }
    assert run.data.metrics["alert"] == 1.0
    assert run.data.metrics["drift_share"] >= 0.5
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert artifacts == {"report.html", "summary.json"}


def test_too_few_records_give_no_verdict(s3: S3Settings, registry: MlflowSettings) -> None:
    put_records(s3, sink_table(records(50, seed=5, **NEW_UPLOAD_TOOL), DAY, 24, "default", "1", seed=5), 1)
    result = _run(s3, registry, DAY)
    assert result.verdict == "no_verdict"
    assert result.records == 50
    assert result.report_uri is None
    assert "fewer than min_records=200" in json.loads(_s3_text(s3, result.summary_uri))["message"]


def test_an_empty_window_a_missing_bucket_and_no_credentials(s3: S3Settings, registry: MlflowSettings) -> None:
    from components.common.errors import DataSourceError

    with pytest.raises(DataSourceError, match="APD_SINK__BUCKET"):
        _run(s3, registry, DAY)  # nothing was ever written: no bucket
    put_records(s3, sink_table(records(10, seed=6), DAY, 24, "default", "1", seed=6), 1)
    assert _run(s3, registry, DAY - timedelta(days=3)).records == 0
    with pytest.raises(DataSourceError, match="cannot read the sink's records"):
        _run(S3Settings(endpoint=s3.endpoint), registry, DAY)  # no credentials: the server answers 403


def test_the_command_exits_3_on_alert(
    two_days: S3Settings, registry: MlflowSettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from components.cli import main

    _environment(monkeypatch, two_days, registry)
    assert main(["drift", "run", "--start", "2026-11-01", "--end", "2026-11-02"]) == 0
    assert "verdict: OK" in capsys.readouterr().out
    assert main(["drift", "run", "--model-version", "1", "--start", "2026-11-02", "--end", "2026-11-03"]) == 3
    out = capsys.readouterr().out
    assert "verdict: ALERT: drift share" in out
    assert "brightness" in out
    assert main(["drift", "run", "--model-version", "7", "--start", "2026-11-02", "--end", "2026-11-03"]) == 2
    assert "has no version 7" in capsys.readouterr().err


def _environment(monkeypatch: pytest.MonkeyPatch, s3: S3Settings, registry: MlflowSettings) -> None:
    """APD_* variables that point `apd` and the KFP step at the test's S3 server and registry."""
    for name, value in {
        "APD_S3__ENDPOINT": s3.endpoint,
        "APD_S3__ACCESS_KEY": "test-access",
        "APD_S3__SECRET_KEY": "test-secret",
        "APD_MLFLOW__TRACKING_URI": registry.tracking_uri,
        "APD_MLFLOW__ARTIFACT_ROOT": registry.artifact_root,
        "APD_LOGGING__FORMAT": "json",
    }.items():
        monkeypatch.setenv(name, value)


def test_the_kfp_component_under_kfp_local(
    two_days: S3Settings, registry: MlflowSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import kfp.local

    from components.drift import drift

    _environment(monkeypatch, two_days, registry)
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "runs"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*", category=RuntimeWarning)
        task = drift(window_start="2026-11-02T00:00:00", window_end="2026-11-03T00:00:00")
    assert task.outputs["Output"] is True
    summary = json.loads(Path(task.outputs["summary"].path).read_text())
    assert summary["verdict"] == "alert"
    assert task.outputs["summary"].metadata["verdict"] == "alert"
    assert "<html" in Path(task.outputs["report"].path).read_text().lower()
    assert task.outputs["metrics"].metadata["alert"] == 1.0
    assert task.outputs["metrics"].metadata["records"] == 3000


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """A real Prometheus Pushgateway (Debian package prometheus-pushgateway) on a free loopback port."""
    if not PUSHGATEWAY.exists():
        pytest.skip(f"{PUSHGATEWAY} is not installed (apt-get install prometheus-pushgateway)")
    address = f"127.0.0.1:{free_port()}"
    log = (tmp_path / "pushgateway.log").open("w")
    process = subprocess.Popen([str(PUSHGATEWAY), f"--web.listen-address={address}"], stdout=log, stderr=log)
    url = f"http://{address}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                    break
            except OSError as exc:
                if time.monotonic() > deadline or process.poll() is not None:
                    text = (tmp_path / "pushgateway.log").read_text()
                    raise RuntimeError(f"the Pushgateway did not start: {text}") from exc
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _gauges(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("apd_drift_")
    }


def test_gauges_reach_a_real_pushgateway(two_days: S3Settings, registry: MlflowSettings, pushgateway: str) -> None:
    settings = DriftSettings(pushgateway_url=pushgateway)
    drifted = _run(two_days, registry, DAY + timedelta(days=1), settings=settings)
    group = {"endpoint": "default", "instance": "", "job": PUSH_JOB, "model_name": MODEL, "model_version": "1"}
    assert set(GROUPING_LABELS) < set(group)
    key = tuple(sorted(group.items()))
    gauges = _gauges(pushgateway)
    assert gauges[(DriftGauge.ALERT.metric, key)] == 1.0
    assert gauges[(DriftGauge.DETECTED.metric, key)] == 1.0
    assert gauges[(DriftGauge.RECORDS.metric, key)] == 3000
    assert drifted.signals is not None
    assert gauges[(DriftGauge.SHARE.metric, key)] == drifted.signals.drift_share
    detected = DriftGauge.FEATURE_DETECTED.metric
    assert gauges[(detected, tuple(sorted({**group, "feature": "brightness"}.items())))] == 1
    assert gauges[(detected, tuple(sorted({**group, "feature": "width"}.items())))] == 0
    assert {name for name, _ in gauges} == {g.metric for g in DriftGauge}  # every gauge of the table, no other
    for gauge in DriftGauge:
        if not gauge.labels:
            assert (gauge.metric, key) in gauges, gauge
    assert abs(gauges[(DriftGauge.LAST_RUN.metric, key)] - time.time()) < 120

    # a later run without a verdict replaces the group: no stale drift numbers stay behind
    _run(two_days, registry, DAY - timedelta(days=1), settings=settings)
    gauges = _gauges(pushgateway)
    assert gauges[(DriftGauge.RECORDS.metric, key)] == 0
    assert (DriftGauge.ALERT.metric, key) not in gauges
    assert (DriftGauge.SHARE.metric, key) not in gauges
