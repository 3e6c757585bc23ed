"""A real Prometheus (Debian's `prometheus`) evaluating the chart's alert rules and scraping the real exporters.

The deploy tests check the rules with promtool's offline unit tests; here the PrometheusRule the chart renders is
loaded by a running Prometheus server that scrapes a real Pushgateway (`prometheus-pushgateway`) fed by the drift
job's own push code, and another Prometheus scrapes a real `apd serve` after a prediction. What this adds: the
rules load and evaluate without runtime errors on real series (vector matching, label sets), the Pushgateway scrape
keeps the pushed job and grouping labels (honor_labels), and the served metrics carry the labels the dashboard and
the alerts select on.
"""

import base64
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.common.features import FEATURE_NAMES
from components.monitoring.publish import PUSH_JOB, push_gauges
from components.monitoring.result import DriftResult
from components.monitoring.signals import ColumnDrift, DriftSignals
from tests.deploy import conftest as deploy
from tests.helpers.artifacts import detector_artifact
from tests.helpers.images import encode
from tests.helpers.net import free_port
from tests.helpers.servers import MODEL, ModelServer
from tests.unit.monitoring.synthetic import drift_result

pytestmark = pytest.mark.integration

helm = deploy.helm  # the pinned Helm fixture of the deploy tests (skips there only when it cannot be fetched)

DEADLINE_S = 40  # for a server to come up, a scrape to land, an alert to fire (the intervals are 1 s)


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: apt-get install {package}")
    return path


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def _api(base: str, path: str, **params: str) -> Any:
    """``data`` of a Prometheus HTTP API answer (asserting its status is success)."""
    body = _get(f"{base}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else ""))
    assert body["status"] == "success", body
    return body["data"]


def _wait_for(what: str, probe: Callable[[], Any], log: Path | None = None) -> Any:
    """Call ``probe`` until it returns something truthy; fail with ``what`` (and the log's tail) at the deadline."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            pytest.fail(f"timed out after {DEADLINE_S} s waiting for {what}\n{tail}")
        time.sleep(0.5)


@contextmanager
def _process(command: list[str], ready_url: str, log: Path) -> Iterator[None]:
    """Run ``command`` until the block ends; wait for ``ready_url`` to answer 200 first."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:

            def ready() -> bool:
                assert process.poll() is None, f"{command[0]} exited ({process.returncode}):\n{log.read_text()}"
                try:
                    with urllib.request.urlopen(ready_url, timeout=2) as response:
                        return bool(response.status == 200)
                except (urllib.error.URLError, ConnectionError):
                    return False

            _wait_for(f"{command[0]} at {ready_url}", ready, log)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


@contextmanager
def _pushgateway(tmp: Path) -> Iterator[str]:
    """A Pushgateway on a free loopback port; yields its host:port."""
    binary = _binary("prometheus-pushgateway", "prometheus-pushgateway")
    address = f"127.0.0.1:{free_port()}"
    with _process([binary, f"--web.listen-address={address}"], f"http://{address}/-/ready", tmp / "pushgateway.log"):
        yield address


@contextmanager
def _prometheus(tmp: Path, scrape_configs: list[dict[str, Any]], rules: dict[str, Any] | None = None) -> Iterator[str]:
    """A Prometheus server (1 s scrape and evaluation intervals, its own TSDB folder); yields its base URL."""
    binary = _binary("prometheus", "prometheus")
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": scrape_configs,
    }
    if rules is not None:
        (tmp / "rules.yaml").write_text(yaml.safe_dump(rules, width=1000))
        config["rule_files"] = [str(tmp / "rules.yaml")]
    (tmp / "prometheus.yaml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    command = [
        binary,
        f"--config.file={tmp / 'prometheus.yaml'}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address={address}",
    ]
    with _process(command, f"http://{address}/-/ready", tmp / "prometheus.log"):
        yield f"http://{address}"


# ------------------------------------------------------------------------------------ drift alerts, as rendered


def _signals(drift_share: float, confidence_drop: float, probability_shift: float) -> DriftSignals:
    """The signals of one window: ``drift_share`` of the image features drifted, the margin fell by
    ``confidence_drop`` of the reference's, the mean probability moved by ``probability_shift``."""
    drifted = round(drift_share * len(FEATURE_NAMES))
    return DriftSignals(
        records=1200,
        reference_records=600,
        drift_share=drift_share,
        drifted_features=drifted,
        dataset_drift=drift_share >= 0.5,
        features={
            name: ColumnDrift(score=0.01 if i < drifted else 0.6, detected=i < drifted, method="ks", threshold=0.05)
            for i, name in enumerate(FEATURE_NAMES)
        },
        skipped_features=[],
        mean_probability=0.3 + probability_shift,
        mean_probability_reference=0.3,
        mean_probability_shift=probability_shift,
        low_confidence_ratio=0.1 + confidence_drop,
        low_confidence_ratio_reference=0.1,
        ai_generated_ratio=0.3 + probability_shift,
        ai_generated_ratio_reference=0.3,
        probability_drift=ColumnDrift(score=0.2, detected=False, method="wasserstein", threshold=0.1),
        mean_margin=0.6 * (1 - confidence_drop),
        mean_margin_reference=0.6,
        confidence_drop=confidence_drop,
        ai_declared_ratio=0.05,
    )


def _run(signals: DriftSignals, verdict: str, model_version: str, endpoint: str) -> DriftResult:
    """A drift run that has just finished (the unit tests' result, moved to now: the rules ignore runs over 3 h old)."""
    now = datetime.now(UTC)
    return replace(
        drift_result(signals, verdict),
        model_version=model_version,
        endpoint=endpoint,
        run_at=now.isoformat(),
        window_end=now.isoformat(),
        alerts=["drift share 80%"] if verdict == "alert" else [],
    )


def _alerts_of(prometheus: str, group: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Prometheus's active alerts whose labels include ``group``, by alert name."""
    active = _api(prometheus, "alerts")["alerts"]
    return {a["labels"]["alertname"]: a for a in active if group.items() <= a["labels"].items()}


def test_the_charts_drift_alerts_fire_in_a_real_prometheus(helm: deploy.Helm, tmp_path: Path) -> None:
    spec = deploy.rendered_rules(helm)
    rules = deploy.alert_rules(spec)
    drift_alerts = {"ApdDataDrift", "ApdConfidenceDrop", "ApdPredictionDrift"}
    assert not [rules[name]["for"] for name in drift_alerts if "for" in rules[name]], "expected to fire at once"
    # The rules select namespace="apd": on a cluster the Prometheus Operator adds the Pushgateway target's
    # namespace (the release's); honor_labels keeps the pushed job and grouping labels, as the ServiceMonitor does.
    with _pushgateway(tmp_path) as pushgateway:
        scrape = {
            "job_name": "apd-pushgateway",
            "honor_labels": True,
            "static_configs": [{"targets": [pushgateway], "labels": {"namespace": deploy.NAMESPACE}}],
        }
        with _prometheus(tmp_path, [scrape], {"groups": spec["groups"]}) as prometheus:
            # The normal run first: every scrape that carries the drifted group carries this one too.
            push_gauges(_run(_signals(0.1, 0.05, 0.01), "ok", "3", "canary"), pushgateway)
            push_gauges(_run(_signals(0.8, 0.3, 0.12), "alert", "2", "default"), pushgateway)

            drifted = {"model_name": "apd-detector", "model_version": "2", "endpoint": "default"}

            def all_firing() -> dict[str, dict[str, Any]] | None:
                found = _alerts_of(prometheus, drifted)
                return found if all(found.get(n, {}).get("state") == "firing" for n in drift_alerts) else None

            firing = _wait_for(f"{sorted(drift_alerts)} to fire for {drifted}", all_firing, tmp_path / "prometheus.log")
            for name in drift_alerts:
                assert firing[name]["labels"] == {
                    "alertname": name,
                    "severity": "warning",
                    "job": PUSH_JOB,
                    "namespace": deploy.NAMESPACE,
                    **drifted,
                }, name
            assert float(firing["ApdConfidenceDrop"]["value"]) == pytest.approx(0.3)
            assert float(firing["ApdDataDrift"]["value"]) == pytest.approx(0.8)
            assert float(firing["ApdPredictionDrift"]["value"]) == pytest.approx(0.12)
            # The annotations' templates render with the pushed labels and the value.
            confidence = firing["ApdConfidenceDrop"]["annotations"]
            assert confidence["summary"] == "Prediction confidence of apd-detector 2 (default endpoint) dropped."
            assert "fell by 30% of the reference's" in confidence["description"]
            assert "found 80% of the image features drifted" in firing["ApdDataDrift"]["annotations"]["description"]

            # The normal group reached Prometheus with its labels, and nothing alerts for it.
            normal = {"model_name": "apd-detector", "model_version": "3", "endpoint": "canary"}
            assert _alerts_of(prometheus, {"model_version": "3"}) == {}
            assert _alerts_of(prometheus, {"endpoint": "canary"}) == {}
            # One series per scrape target that carries the group (Prometheus may list it under more than one).
            found = _api(prometheus, "query", query='apd_drift_confidence_drop{model_version="3",endpoint="canary"}')[
                "result"
            ]
            assert found
            for series in found:
                assert normal.items() <= series["metric"].items()
                assert series["metric"]["job"] == PUSH_JOB
                assert float(series["value"][1]) == pytest.approx(0.05)
            # Neither are the job's freshness alerts raised, and no rule failed to evaluate on the real series.
            assert not {"ApdDriftJobStale", "ApdDriftMetricsMissing"} & set(_alerts_of(prometheus, {}))
            groups = _api(prometheus, "rules")["groups"]
            assert {g["name"] for g in groups} == {g["name"] for g in spec["groups"]}
            errors = {r["name"]: r.get("lastError") for g in groups for r in g["rules"] if r["health"] == "err"}
            assert errors == {}


# -------------------------------------------------------------------------------------- the model server scraped


def test_prometheus_scrapes_the_served_metrics(tmp_path: Path) -> None:
    server = ModelServer(tmp_path, str(detector_artifact(tmp_path / "mnt" / "models")))  # fresh counters
    try:
        status, body = server.call(
            "POST",
            f"/v1/models/{MODEL}:predict",
            {"instances": [{"image": {"b64": base64.b64encode(encode("JPEG", (300, 200))).decode()}}]},
        )
        assert status == 200, body
        [prediction] = body["predictions"]
        # The job as the chart's PodMonitor names it (namespace/name), which the serving alerts select.
        job = f"{deploy.NAMESPACE}/apd-predictor"
        scrape = {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{server.http}"]}]}
        with _prometheus(tmp_path, [scrape]) as prometheus:

            def query(expr: str) -> list[dict[str, Any]]:
                return list(_api(prometheus, "query", query=expr)["result"])

            [predictions] = _wait_for(
                "apd_predictions_total in Prometheus",
                lambda: query("apd_predictions_total"),
                tmp_path / "prometheus.log",
            )
            assert predictions["metric"] == {
                "__name__": "apd_predictions_total",
                "job": job,
                "instance": f"127.0.0.1:{server.http}",
                "label": prediction["label"],
                "model_version": prediction["model_version"],
            }
            assert float(predictions["value"][1]) == 1

            [latency] = query(f'request_predict_seconds_count{{job="{job}", model_name="{MODEL}"}}')
            assert float(latency["value"][1]) >= 1
            [up] = query(f'up{{job="{job}"}}')
            assert up["value"][1] == "1"
    finally:
        server.process.kill()  # a throwaway server: KServe's graceful shutdown would only add seconds
        server.stop()
