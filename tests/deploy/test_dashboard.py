"""The Grafana dashboard (helm/dashboards.py -> helm/apd/dashboards/apd-detector.json) and the drift and sink alerts.

Grafana cannot run here, so the committed dashboard is checked offline: it must equal a fresh build, pass Grafana
11.6's JSON schemas (``../shared/schemas/grafana-11.6``), and every query must be PromQL that promtool accepts. The
metric and label names of the dashboard and of the alert rules are checked against the metric contracts below
(KServe's histograms, serving/metrics.py, the payload sink, the drift job's Pushgateway gauges), so a typo fails
here instead of drawing an empty panel or an alert that never fires. The drift and sink alerts are unit-tested with
``promtool test rules`` on the rules the chart renders.
"""

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from components.monitoring.publish import GROUPING_LABELS, DriftGauge
from tests.deploy import get_schemas
from tests.deploy.conftest import (
    CHART,
    FULL,
    MONITORING_APIS,
    RAW_SCALING,
    REPO,
    Helm,
    alert_rules,
    rendered_rules,
)
from tests.deploy.schemas import schemas_dir

DASHBOARD = CHART / "dashboards" / "apd-detector.json"
BUILDER = REPO / "helm" / "dashboards.py"

# ------------------------------------------------------------------------------------------ metric contracts

# Labels each series carries besides its own: Prometheus Operator's target labels, the PodMonitor's `revision`,
# and the histogram bucket bound.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "service", "endpoint", "revision"}
DRIFT_GROUP = set(GROUPING_LABELS)
_HISTOGRAMS: dict[str, set[str]] = {
    # KServe 0.21 (kserve/metrics.py), one per model.
    "request_preprocess_seconds": {"model_name"},
    "request_predict_seconds": {"model_name"},
    "request_postprocess_seconds": {"model_name"},
    "request_explain_seconds": {"model_name"},
    # serving/metrics.py
    "apd_probability": {"model_version"},
    "apd_image_bytes": set(),
    "apd_preprocess_seconds": set(),
    "apd_inference_seconds": set(),
    # payload sink
    "apd_sink_flush_seconds": set(),
}
_SERIES: dict[str, set[str]] = {
    "up": set(),
    # Knative queue-proxy (Serverless mode), scraped by the same PodMonitor.
    "revision_app_request_count": {
        "response_code",
        "response_code_class",
        "revision_name",
        "configuration_name",
        "namespace_name",
        "service_name",
        "pod_name",
        "container_name",
    },
    # serving/metrics.py
    "apd_predictions_total": {"label", "model_version"},
    "apd_invalid_requests_total": {"reason"},
    "apd_cache_lookups_total": {"result"},
    "apd_cache_entries": set(),
    # payload sink
    "apd_sink_events_total": {"type"},
    "apd_sink_rejected_total": {"reason"},
    "apd_sink_duplicates_total": set(),
    "apd_sink_unpaired_total": set(),
    "apd_sink_records_written_total": set(),
    "apd_sink_s3_errors_total": set(),
    "apd_sink_wal_events": set(),
    # drift job, pushed to the Pushgateway with job="apd-drift" and the grouping labels: its own table
    **{gauge.metric: {*DRIFT_GROUP, *gauge.labels} for gauge in DriftGauge},
}
KNOWN_METRICS: dict[str, set[str]] = {
    **_SERIES,
    **{f"{name}_bucket": {*labels, "le"} for name, labels in _HISTOGRAMS.items()},
    **{f"{name}_{suffix}": labels for name, labels in _HISTOGRAMS.items() for suffix in ("count", "sum")},
}
KNOWN_LABELS = TARGET_LABELS.union(*KNOWN_METRICS.values())

# Grafana's variables, replaced by plausible values before promtool reads a query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "2m",
    "$__interval": "1m",
    "$__range": "6h",
    "$namespace": "apd",
    "$model_version": "3",
    "$endpoint": "default",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan"}


def promql_names(expr: str) -> tuple[set[str], set[str], list[str]]:
    """(metric names, label names, problems) of a PromQL expression, for a typo check (not a full parser)."""
    text = _STRING.sub('""', expr)
    labels: set[str] = set()
    problems = []
    for match in _GROUPING.finditer(text):
        labels |= {name.strip() for name in match.group(1).split(",") if name.strip()}
    for metric, matchers in _SELECTOR.findall(text):
        used = set(_MATCHER.findall(matchers))
        labels |= used
        if metric in KNOWN_METRICS:
            foreign = used - KNOWN_METRICS[metric] - TARGET_LABELS
            if foreign:
                problems.append(f"{metric} has no label {sorted(foreign)}")
    text = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS}
    return names, labels, problems


def check_names(exprs: dict[str, str]) -> list[str]:
    """Every problem with the metric and label names of ``exprs`` (where -> PromQL)."""
    problems = []
    for where, expr in exprs.items():
        names, labels, own = promql_names(expr)
        problems += [f"{where}: {p}" for p in own]
        if not names:
            problems.append(f"{where}: no metric found in {expr!r}")
        problems += [f"{where}: unknown metric {n}" for n in sorted(names - KNOWN_METRICS.keys())]
        problems += [f"{where}: unknown label {n}" for n in sorted(labels - KNOWN_LABELS)]
    return problems


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("rate(apd_prediction_total[5m])", "unknown metric apd_prediction_total"),  # a missing "s"
        ('apd_drift_share{model_verison="1"}', "has no label ['model_verison']"),  # a misspelt label
        ("sum by (reasons) (apd_invalid_requests_total)", "unknown label reasons"),  # a misspelt grouping label
        ("histogram_quantile(0.9, rate(apd_probability_buckets[5m]))", "unknown metric apd_probability_buckets"),
        ('apd_sink_events_total{reason="x"}', "has no label ['reason']"),  # a label of another metric
    ],
)
def test_name_check_catches_typos(expr: str, complaint: str) -> None:
    """The typo check itself: each case must be reported."""
    problems = check_names({"case": expr})
    assert any(complaint in p for p in problems), problems


def test_name_check_accepts_real_queries() -> None:
    exprs = {
        "quantile": 'histogram_quantile(0.95, sum by (le) (rate(request_predict_seconds_bucket{job="a/b"}[5m])))',
        "offset": 'sum(rate(apd_predictions_total{label="ai_generated"}[1h] offset 1d)) / 2e0',
        "join": "time() - max by (model_name) (apd_drift_last_run_timestamp_seconds) > 10800",
    }
    assert check_names(exprs) == []


# ------------------------------------------------------------------------------------------------ the dashboard


@cache
def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("apd_dashboards", BUILDER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and of every variable's label_values() selector."""
    for panel in _panels():
        for target in panel["targets"]:
            yield f"panel {panel['id']} {panel['title']!r} query {target['refId']}", target["expr"]
    for var in _dashboard()["templating"]["list"]:
        if var["type"] == "query":
            selector = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"])
            assert selector, f"variable {var['name']}: not a label_values(selector, label) query"
            yield f"variable {var['name']}", selector.group(1)


def test_committed_dashboard_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(BUILDER), "--check"], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr  # names the command that regenerates it


def test_check_mode_reports_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = _builder()
    copy = tmp_path / "apd-detector.json"
    monkeypatch.setattr(module, "OUTPUT", copy)
    copy.write_text(DASHBOARD.read_text())
    assert module.main(["--check"]) == 0
    copy.write_text(DASHBOARD.read_text().replace("Requests/s", "Requests"))  # an edit by hand
    assert module.main(["--check"]) == 1
    assert "regenerate it with `python helm/dashboards.py`" in capsys.readouterr().out
    copy.unlink()
    assert module.main(["--check"]) == 1  # a missing file is stale too


@cache
def _grafana_registry() -> Registry:
    folder = schemas_dir() / "grafana-11.6"
    if not folder.is_dir():
        pytest.fail(f"no Grafana schemas at {folder}: {get_schemas.HOW_TO_GET}")
    return Registry().with_resources(
        (path.name, Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT7))
        for path in sorted(folder.glob("*.jsonschema.json"))
    )


def _schema_errors(ref: str, instance: Any, where: str) -> list[str]:
    validator = jsonschema.Draft7Validator({"$ref": ref}, registry=_grafana_registry())
    return [
        f"{where}: {'/'.join(map(str, error.absolute_path)) or '.'}: {error.message[:300]}"
        for error in validator.iter_errors(instance)
    ]


def test_dashboard_matches_grafana_schema() -> None:
    """The dashboard schema, then what it leaves open: each panel's options and field config against its plugin's
    schema (timeseries, stat), and each target against the Prometheus query schema."""
    dashboard = _dashboard()
    errors = _schema_errors("dashboard.jsonschema.json", dashboard, "dashboard")
    for panel in _panels():
        where = f"panel {panel['id']} {panel['title']!r}"
        assert panel["type"] in {"timeseries", "stat"}, f"{where}: no schema here for a {panel['type']} panel"
        errors += _schema_errors(f"{panel['type']}.jsonschema.json#/definitions/Options", panel["options"], where)
        if panel["type"] == "timeseries":
            custom = panel["fieldConfig"]["defaults"].get("custom", {})
            errors += _schema_errors("timeseries.jsonschema.json#/definitions/FieldConfig", custom, where)
        assert panel["targets"], f"{where}: no query"
        for target in panel["targets"]:
            errors += _schema_errors("prometheus.jsonschema.json", target, where)
    assert not errors, "\n".join(errors)


def test_dashboard_layout_and_variables() -> None:
    dashboard = _dashboard()
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Serving", "Drift", "Payload sink"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dashboard["panels"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "model_version", "endpoint"]
    assert variables["datasource"]["query"] == "prometheus"
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    used = {name for _, expr in _queries() for name in re.findall(r"\$\{?(\w+)", expr)}
    assert used <= {*variables, "__rate_interval"}, f"undefined variables: {used - {*variables, '__rate_interval'}}"


def test_drift_thresholds_follow_the_chart_defaults() -> None:
    """The lines drawn on the drift panels are the alert thresholds of values.yaml."""
    drift = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]["rules"]["drift"]
    steps = {
        p["title"]: [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]]
        for p in _panels()
        if "thresholds" in p["fieldConfig"]["defaults"]
    }
    assert steps["Confidence drop"] == [drift["confidenceDrop"]] == [0.15]
    assert steps["Drift share"] == [drift["share"]]
    assert steps["Mean probability shift"] == [-drift["meanProbabilityShift"], drift["meanProbabilityShift"]]
    assert steps["Time since last drift run"][-1] == drift["staleAfterSeconds"]


def test_dashboard_queries_pass_promtool(promtool: str, tmp_path: Path) -> None:
    """Each query, Grafana's variables replaced, as a recording rule: promtool parses and checks them all."""
    rules = []
    for number, (where, expr) in enumerate(_queries()):
        concrete = expr
        for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
            concrete = concrete.replace(name, value)
        assert "$" not in concrete, f"{where}: unreplaced variable in {concrete!r}"
        rules.append({"record": f"apd_dashboard:query_{number}", "expr": concrete, "labels": {"where": where}})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_dashboard_uses_only_known_metrics() -> None:
    problems = check_names(dict(_queries()))
    assert not problems, "\n".join(problems)


def test_dashboard_covers_every_contract_metric() -> None:
    """Each metric of the contracts has a panel (KServe's pre/postprocess histograms aside: our model does its
    decoding in predict, so they time nothing)."""
    used = {name for _, expr in _queries() for name in promql_names(expr)[0]}
    families = {name if name in _SERIES else re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    unused = set(_SERIES) | set(_HISTOGRAMS)
    unused -= families | {"up", "request_preprocess_seconds", "request_postprocess_seconds"}
    assert not unused, f"metrics without a panel: {sorted(unused)}"


# ------------------------------------------------------------------------------------------------- alert rules


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_alert_rules_use_only_known_metrics(helm: Helm, mode: str) -> None:
    extra = RAW_SCALING if mode == "RawDeployment" else ()
    alerts = alert_rules(rendered_rules(helm, f"inferenceService.deploymentMode={mode}", *extra))
    problems = check_names({name: rule["expr"] for name, rule in alerts.items()})
    assert not problems, "\n".join(problems)


def test_the_chart_names_only_gauges_the_drift_job_pushes() -> None:
    """Every apd_drift_ name in the chart's files (the PrometheusRule template, values.yaml, the dashboard), whether
    the values render it or not, is a gauge of the drift job's table."""
    pushed = {gauge.metric for gauge in DriftGauge}
    named: dict[str, set[str]] = {}
    for path in sorted(CHART.rglob("*")):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".tpl", ".json", ".txt"}:
            for name in re.findall(r"\bapd_drift_\w+", path.read_text()):
                named.setdefault(name, set()).add(str(path.relative_to(CHART)))
    assert {name for name, files in named.items() if "templates/prometheusrule.yaml" in files}, "no drift rule found"
    unknown = {name: sorted(files) for name, files in named.items() if name not in pushed}
    assert not unknown, f"not pushed by the drift job (components/monitoring/publish.py): {unknown}"


def test_every_alert_has_severity_and_annotations(helm: Helm) -> None:
    alerts = alert_rules(rendered_rules(helm))
    assert {
        "ApdDataDrift",
        "ApdConfidenceDrop",
        "ApdPredictionDrift",
        "ApdDriftJobStale",
        "ApdDriftMetricsMissing",
        "ApdSinkBacklog",
        "ApdSinkS3Errors",
        "ApdHighServerErrorRatio",
        "ApdHighPredictLatencyP95",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name
        if name.startswith("Apd"):
            assert rule["annotations"].get("runbook"), f"{name}: no runbook hint"


def test_drift_and_sink_alerts_follow_their_components(helm: Helm) -> None:
    """No drift job, no drift alerts (ApdDriftMetricsMissing would fire forever); no sink, no sink alerts."""
    alerts = alert_rules(rendered_rules(helm, "drift.enabled=false", "sink.enabled=false", "logger.enabled=false"))
    assert not [name for name in alerts if name.startswith(("ApdDrift", "ApdSink", "ApdData", "ApdConf"))]
    assert "ApdHighPredictLatencyP95" in alerts


def test_thresholds_come_from_values(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "thresholds.yaml"  # a file: `--set` passes 0.3 as a string
    drift = {"share": 0.3, "confidenceDrop": 0.2, "meanProbabilityShift": 0.05, "staleAfterSeconds": 7200}
    values.write_text(yaml.safe_dump({"monitoring": {"rules": {"drift": drift}}}))
    alerts = alert_rules(rendered_rules(helm, files=(values,)))
    assert ">= 0.3\n" in alerts["ApdDataDrift"]["expr"]
    assert "> 0.2\n" in alerts["ApdConfidenceDrop"]["expr"]
    assert ">= 0.05\n" in alerts["ApdPredictionDrift"]["expr"]
    assert alerts["ApdDriftJobStale"]["expr"].endswith("> 7200")
    assert alerts["ApdDriftMetricsMissing"]["for"] == "7200s"


def test_predictor_down_is_not_an_alert_when_scaling_to_zero(helm: Helm) -> None:
    assert "ApdPredictorDown" in alert_rules(rendered_rules(helm))
    assert "ApdPredictorDown" not in alert_rules(rendered_rules(helm, "predictor.minReplicas=0"))


def _render_annotation(text: str, labels: dict[str, str], value: str) -> str:
    """An annotation as Prometheus renders it, for the label and $value forms the rules use."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)
    return re.sub(r"\{\{ \$value[^}]*\}\}", value, text)


def _expect(rules: dict[str, dict[str, Any]], alert: str, labels: dict[str, str], value: str) -> dict[str, Any]:
    """One expected firing alert of ``alert`` for a series with ``labels``; ``value`` is $value as rendered."""
    rule = rules[alert]
    all_labels = {**labels, **rule["labels"]}
    return {
        "exp_labels": all_labels,
        "exp_annotations": {k: _render_annotation(v, all_labels, value) for k, v in rule["annotations"].items()},
    }


def _promtool_test(promtool: str, tmp_path: Path, spec: dict[str, Any], tests: list[dict[str, Any]]) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    suite = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(suite, width=1000))
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yaml"], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Labels of a drift group as Prometheus stores it: pushed job and grouping labels, the Pushgateway's namespace.
GROUP = {"job": "apd-drift", "model_name": "apd-detector", "namespace": "apd", "instance": "10.0.0.7:9091"}


def _drift_series(
    labels: dict[str, str], share: str, drop: str, shift: str, alert: str, runs: str
) -> list[dict[str, str]]:
    """Input series of one drift group: its gauges' promtool values (share, confidence drop, mean probability shift,
    the job's alert verdict, the time of its latest run)."""
    rendered = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    values = {"share": share, "confidence_drop": drop, "mean_probability_shift": shift, "alert": alert,
              "last_run_timestamp_seconds": runs}  # fmt: skip
    return [{"series": f"apd_drift_{name}{{{rendered}}}", "values": v} for name, v in values.items()]


# A run every 10 minutes: the timestamp series holds the time of the latest run (test time starts at 0).
RUNS = "0 0 0 0 0 0 0 0 0 0 600 600 600 600 600 600 600 600 600 600 1200 1200 1200 1200 1200 1200 1200 1200 1200 1200"


def test_drift_alerts_fire_on_drifted_series_only(helm: Helm, promtool: str, tmp_path: Path) -> None:
    spec = rendered_rules(helm)
    rules = alert_rules(spec)
    drifted = {**GROUP, "model_version": "4", "endpoint": "canary"}
    normal = {**GROUP, "model_version": "3", "endpoint": "default"}
    verdict = {**GROUP, "model_version": "5", "endpoint": "shadow"}
    series = [
        # The canary drifted: 60 % of its features, a confidence drop of 0.16 (over 0.15), the mean probability +0.12.
        *_drift_series(drifted, "0.6x29", "0.16x29", "0.12x29", "0x29", RUNS),
        # The default endpoint is normal: a confidence drop of 0.14, just under the incident's 0.15.
        *_drift_series(normal, "0.2x29", "0.14x29", "-0.02x29", "0x29", RUNS),
        # A small shift, but the drift job's own verdict says alert.
        *_drift_series(verdict, "0.1x29", "0x29", "-0.04x29", "1x29", RUNS),
    ]

    alert_tests = [
        {
            "eval_time": "25m",
            "alertname": "ApdDataDrift",
            "exp_alerts": [_expect(rules, "ApdDataDrift", drifted, "60%")],
        },
        {
            "eval_time": "25m",
            "alertname": "ApdConfidenceDrop",
            "exp_alerts": [_expect(rules, "ApdConfidenceDrop", drifted, "16%")],
        },
        {
            "eval_time": "25m",
            "alertname": "ApdPredictionDrift",
            "exp_alerts": [
                _expect(rules, "ApdPredictionDrift", drifted, "0.120"),
                _expect(rules, "ApdPredictionDrift", verdict, "0.040"),
            ],
        },
        {"eval_time": "25m", "alertname": "ApdDriftJobStale", "exp_alerts": []},
        {"eval_time": "25m", "alertname": "ApdDriftMetricsMissing", "exp_alerts": []},
    ]
    _promtool_test(
        promtool, tmp_path, spec, [{"interval": "1m", "input_series": series, "alert_rule_test": alert_tests}]
    )


def test_drift_alerts_ignore_old_and_stale_groups(helm: Helm, promtool: str, tmp_path: Path) -> None:
    """The Pushgateway keeps every group: a replaced model version's last values, and a drift job that stopped,
    must not alert as if they were news; the stopped job raises ApdDriftJobStale instead."""
    spec = rendered_rules(helm)
    rules = alert_rules(spec)
    drifted = ("0.9x300", "0.5x300", "0.4x300", "1x300")  # share, confidence drop, mean shift, alert
    old = {**GROUP, "model_version": "2", "endpoint": "default"}
    current = {**GROUP, "model_version": "3", "endpoint": "default"}
    replaced = [
        # Version 2 drifted and was replaced by version 3 at 10 minutes; its frozen group stays in the Pushgateway.
        *_drift_series(old, *drifted, "0x300"),
        *_drift_series(current, "0.1x300", "0x300", "0x300", "0x300", "_x10 600+60x289"),
    ]
    stopped = _drift_series({**GROUP, "model_version": "3", "endpoint": "default"}, *drifted, "0x300")
    tests: list[dict[str, Any]] = [
        {
            "interval": "1m",
            "input_series": replaced,
            "alert_rule_test": [
                {"eval_time": "30m", "alertname": name, "exp_alerts": []}
                for name in ("ApdDataDrift", "ApdConfidenceDrop", "ApdPredictionDrift", "ApdDriftJobStale")
            ],
        },
        {
            "interval": "1m",
            "input_series": stopped,
            "alert_rule_test": [
                # Within three hours the last run's drift counts...
                {
                    "eval_time": "2h",
                    "alertname": "ApdDataDrift",
                    "exp_alerts": [
                        _expect(rules, "ApdDataDrift", {**GROUP, "model_version": "3", "endpoint": "default"}, "90%")
                    ],
                },
                {"eval_time": "2h", "alertname": "ApdDriftJobStale", "exp_alerts": []},
                # ...after that it is stale: no drift alert from it, the job is reported instead.
                {"eval_time": "4h", "alertname": "ApdDataDrift", "exp_alerts": []},
                {
                    "eval_time": "4h",
                    "alertname": "ApdDriftJobStale",
                    "exp_alerts": [_expect(rules, "ApdDriftJobStale", {"model_name": "apd-detector"}, "4h 0m 0s")],
                },
            ],
        },
        {
            "interval": "1m",
            "input_series": [{"series": 'up{job="other"}', "values": "1x300"}],
            "alert_rule_test": [
                {"eval_time": "2h", "alertname": "ApdDriftMetricsMissing", "exp_alerts": []},
                {
                    "eval_time": "3h10m",
                    "alertname": "ApdDriftMetricsMissing",
                    "exp_alerts": [
                        _expect(
                            rules,
                            "ApdDriftMetricsMissing",
                            {"job": "apd-drift", "model_name": "apd-detector", "namespace": "apd"},
                            "1",
                        )
                    ],
                },
            ],
        },
    ]
    _promtool_test(promtool, tmp_path, spec, tests)


def test_sinkalert_rules(helm: Helm, promtool: str, tmp_path: Path) -> None:
    spec = rendered_rules(helm)
    rules = alert_rules(spec)
    growing = {"job": "apd-sink", "namespace": "apd", "pod": "apd-sink-1"}
    steady = {"job": "apd-sink", "namespace": "apd", "pod": "apd-sink-2"}

    def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
        return {"series": f"{name}{{{', '.join(f'{k}={json.dumps(v)}' for k, v in labels.items())}}}", "values": values}

    tests: list[dict[str, Any]] = [
        {
            "interval": "1m",
            "input_series": [
                # Pod 1: 20 events a minute arrive, half of them stay in the WAL; S3 fails 3 times a minute.
                series("apd_sink_events_total", {**growing, "type": "request"}, "0+20x40"),
                series("apd_sink_wal_events", growing, "0+10x40"),
                series("apd_sink_s3_errors_total", growing, "0+3x40"),
                # Pod 2: traffic ramps up, and the WAL's level with it (1 more event a minute out of hundreds): the
                # sink keeps up. No S3 error.
                series("apd_sink_events_total", {**steady, "type": "request"}, "0+600x40"),
                series("apd_sink_wal_events", steady, "40+1x40"),
                series("apd_sink_s3_errors_total", steady, "7x40"),
            ],
            "alert_rule_test": [
                # Growing, but not yet for 10 minutes.
                {"eval_time": "5m", "alertname": "ApdSinkBacklog", "exp_alerts": []},
                {
                    "eval_time": "25m",
                    "alertname": "ApdSinkBacklog",
                    "exp_alerts": [_expect(rules, "ApdSinkBacklog", growing, "0.17")],
                },
                {
                    "eval_time": "25m",
                    "alertname": "ApdSinkS3Errors",
                    "exp_alerts": [_expect(rules, "ApdSinkS3Errors", {"pod": "apd-sink-1"}, "15")],
                },
            ],
        }
    ]
    _promtool_test(promtool, tmp_path, spec, tests)


# ------------------------------------------------------------------------------------------ the Pushgateway


def test_pushgateway_keeps_the_pushed_labels(helm: Helm) -> None:
    """The drift gauges reach Prometheus through the chart's Pushgateway, scraped with honorLabels so that the
    pushed job="apd-drift" and `endpoint` grouping label win over the target's own job and endpoint (port name)."""
    docs = helm.template([FULL], api_versions=MONITORING_APIS)
    named = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    deployment = named["Deployment", "apd-pushgateway"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "docker.io/prom/pushgateway:v1.11.0"
    assert "--persistence.file=/data/pushgateway.store" in container["args"]
    assert named["Service", "apd-pushgateway"]["spec"]["ports"][0]["port"] == 9091
    monitor = named["ServiceMonitor", "apd-pushgateway"]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    off = helm.template(api_versions=MONITORING_APIS, set_values=["monitoring.pushgateway.enabled=false"])
    assert not [d for d in off if "pushgateway" in d["metadata"]["name"]], "the Pushgateway has its off-switch"
