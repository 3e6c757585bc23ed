"""The KFP ``drift`` step: the drift job (``components.monitoring``) on the live records of a served model version.

The job itself, its signals, alert rules and outputs are described in ``components/monitoring/__init__.py``.

No ``from __future__ import annotations`` here: KFP reads the component's annotations at definition time.
"""

from kfp.dsl import HTML, Artifact, Metrics, Output

from components.stage import stage


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
    from components.monitoring.job import drift_job, run_drift
    from components.monitoring.publish import scalar_metrics

    settings = Settings()
    configure_logging(settings.logging)
    with tempfile.TemporaryDirectory() as tmp:
        job = drift_job(
            settings,
            window_hours,
            pushgateway_url,
            model_version=model_version or None,
            alias=alias,
            endpoint=endpoint,
            start=datetime.fromisoformat(window_start) if window_start else None,
            end=datetime.fromisoformat(window_end) if window_end else None,
            out_dir=Path(tmp),
        )
        result = run_drift(job)
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
