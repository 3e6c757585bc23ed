"""The drift gauges: built from the one table of their names (DriftGauge), only the record count and the time
without a verdict."""

from datetime import UTC, datetime

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from components.common.settings import DriftSettings
from components.monitoring.publish import GROUPING_LABELS, DriftGauge, drift_gauges
from components.monitoring.signals import assess
from tests.unit.monitoring.synthetic import CONFIG, NEW_UPLOAD_TOOL, REFERENCE, drift_result, records


def test_the_gauge_table() -> None:
    """One row per gauge: a unique apd_drift_ name, a help text, labels apart from the Pushgateway grouping key."""
    metrics = [g.metric for g in DriftGauge]
    assert len(set(metrics)) == len(metrics)
    assert all(name.startswith("apd_drift_") for name in metrics)
    assert all(g.doc for g in DriftGauge)
    assert not {label for g in DriftGauge for label in g.labels} & set(GROUPING_LABELS)


def test_a_verdict_pushes_every_gauge_of_the_table() -> None:
    assessment = assess(REFERENCE, records(2000, seed=10, **NEW_UPLOAD_TOOL), CONFIG, DriftSettings())
    text = generate_latest(drift_gauges(drift_result(assessment.signals, assessment.verdict))).decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    assert names == {g.metric for g in DriftGauge}
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert list(families) == [g.metric for g in DriftGauge]  # pushed in the table's order
    for gauge in DriftGauge:
        family = families[gauge.metric]
        assert family.documentation == gauge.doc, gauge
        assert {tuple(sample.labels) for sample in family.samples} == {gauge.labels}, gauge
    assert f'{DriftGauge.FEATURE_DETECTED.metric}{{feature="brightness"}} 1.0' in text
    assert f"{DriftGauge.ALERT.metric} 1.0" in text


def test_without_a_verdict_only_the_record_count_and_time_are_gauged() -> None:
    text = generate_latest(drift_gauges(drift_result(None, "no_verdict"))).decode()
    values = [line for line in text.splitlines() if not line.startswith("#")]
    run_at = datetime(2026, 11, 2, 0, 5, tzinfo=UTC).timestamp()
    assert values == [f"{DriftGauge.RECORDS.metric} 250.0", f"{DriftGauge.LAST_RUN.metric} {run_at:.8g}"]
