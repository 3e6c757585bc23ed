"""The detector's Grafana dashboard as code (grafana-foundation-sdk), written to helm/apd/dashboards/apd-detector.json.

The chart ships every JSON in that folder in a ConfigMap for Grafana's dashboard sidecar; the JSON is generated
from this file and committed. The drift thresholds drawn on the panels are the chart's default alert thresholds
(values.yaml ``monitoring.rules.drift``), read at build time so the lines match the alerts of a default install.
The drift gauges' names come from the drift job's own table (``components.monitoring.publish.DriftGauge``):
run it with the project installed (``make dashboards`` uses the venv's python).

    python helm/dashboards.py          # rewrite the committed JSON
    python helm/dashboards.py --check  # exit 1 when the committed JSON differs from a fresh build (CI)
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    ValueMap,
    ValueMappingResult,
)

from components.monitoring.publish import PUSH_JOB, DriftGauge

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the panel builders next to this file
from panels import (
    RATE,
    WIDE,
    panel_median_p95,
    panel_stat,
    panel_timeseries,
    quantiles,
    query,
    rate,
    steps,
    variable,
)

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "apd"
OUTPUT = CHART / "dashboards" / "apd-detector.json"
REGENERATE = "python helm/dashboards.py"

# Label filters of each family of series; the variables are multi-value, hence the regex matchers.
SERVING = 'namespace=~"$namespace"'
VERSIONED = 'namespace=~"$namespace", model_version=~"$model_version"'
DRIFT = f'job="{PUSH_JOB}", namespace=~"$namespace", model_version=~"$model_version", endpoint=~"$endpoint"'
SINK = 'namespace=~"$namespace"'
LEGEND = "v{{model_version}} {{endpoint}}"  # a drift series: one per model version and endpoint


def drift_thresholds() -> dict[str, Any]:
    """The chart's default drift alert thresholds (values.yaml monitoring.rules.drift)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    return dict(values["monitoring"]["rules"]["drift"])


def serving_row() -> list[Any]:
    requests = "request_predict_seconds_count"
    return [
        panel_timeseries(
            "Requests/s",
            "Predict and explain requests per second that reached the model (KServe's request_*_seconds).",
            [
                query(rate(requests, SERVING), "predict", "predict"),
                query(rate("request_explain_seconds_count", SERVING), "explain", "explain"),
            ],
            unit="reqps",
        ),
        panel_timeseries(
            "Default vs canary",
            "Requests/s per Knative revision (the PodMonitor's `revision` label: the canary is the newer revision) "
            "and images/s per model version, which splits both deployment modes.",
            [
                query(rate(requests, SERVING, "revision"), "requests {{revision}}", "revision"),
                query(
                    rate("apd_predictions_total", VERSIONED, "model_version"), "images v{{model_version}}", "version"
                ),
            ],
            unit="reqps",
        ),
        panel_timeseries(
            "Predict latency",
            "Quantiles of KServe's request_predict_seconds (decode, preprocess and the network, per request).",
            quantiles("request_predict_seconds", SERVING, "predict"),
            unit="s",
        ),
        panel_timeseries(
            "Errors by code",
            "400: requests rejected as invalid input, by reason (apd_invalid_requests_total). "
            "5xx: server errors counted by Knative's queue-proxy (Serverless mode only).",
            [
                query(rate("apd_invalid_requests_total", SERVING, "reason"), "400 {{reason}}", "400"),
                query(
                    rate("revision_app_request_count", f'{SERVING}, response_code_class="5xx"', "revision_name"),
                    "5xx {{revision_name}}",
                    "5xx",
                ),
            ],
            unit="reqps",
            stacked=True,
        ),
        panel_timeseries(
            "Predictions by label",
            "Images scored per second, by predicted label.",
            [
                query(rate("apd_predictions_total", VERSIONED, "label"), "{{label}}", "label"),
            ],
            unit="ops",
            stacked=True,
        ),
        panel_timeseries(
            "Probability distribution",
            "Share of images per bucket of the predicted probability of being AI-generated (apd_probability, "
            "buckets of 0.1; the legend is each bucket's upper bound). Mass in the middle buckets = unsure model.",
            [
                query(
                    f"sum by (le) (increase(apd_probability_bucket{{{VERSIONED}}}[{RATE}]))",
                    "{{le}}",
                    "buckets",
                    heatmap=True,
                )
            ],
            unit="short",
            percent=True,
            bars=True,
        ),
        panel_median_p95(
            "Decode + preprocess and inference time",
            "apd_preprocess_seconds: one image's decode and transforms; apd_inference_seconds: one batch through "
            "the network.",
            SERVING,
            {"preprocess": "apd_preprocess_seconds", "inference": "apd_inference_seconds"},
            unit="s",
        ),
        panel_median_p95(
            "Image size",
            "Size of the received images (apd_image_bytes): large uploads explain slow decoding.",
            SERVING,
            {"size": "apd_image_bytes"},
            unit="bytes",
        ),
        *cache_panels(),
    ]


def cache_panels() -> list[Any]:
    """The result cache (apd_cache_lookups_total, one lookup per image; apd_cache_entries): how often a repeated
    image skips decoding and inference, and how full the cache is."""
    lookups = "apd_cache_lookups_total"
    hits = rate(lookups, f'{SERVING}, result="hit"')
    return [
        panel_timeseries(
            "Result cache hit ratio",
            "Share of images answered from the result cache (same bytes, model version and variant), without "
            "decoding. Hits still count in the prediction panels and reach the payload log.",
            [query(f"{hits} / {rate(lookups, SERVING)}", "hit ratio", "ratio")],
            unit="percentunit",
            minimum=0,
        ),
        panel_timeseries(
            "Result cache",
            "Images per second answered from the result cache (hit) and scored (miss).",
            [query(rate(lookups, SERVING, "result"), "{{result}}", "lookups")],
            unit="ops",
            stacked=True,
        ),
        panel_timeseries(
            "Result cache entries",
            "Answers held per model server process (each worker has its own cache); at APD_CACHE__MAX_ENTRIES the "
            "least recently used go.",
            [query(f"sum by (pod) (apd_cache_entries{{{SERVING}}})", "{{pod}}", "entries")],
            minimum=0,
        ),
    ]


G = DriftGauge  # the drift job's gauges: their names come from its table


def drift(gauge: DriftGauge) -> str:
    """The selector of a drift gauge on the dashboard: the pushed job, the namespace, version and endpoint chosen."""
    return f"{gauge.metric}{{{DRIFT}}}"


def verdict_stat(title: str, description: str, gauge: DriftGauge, ref_id: str) -> stat.Panel:
    """The latest value of a 0/1 drift verdict, shown as OK (green) or ALERT (red)."""
    ok_alert = ValueMap(
        {
            "0": ValueMappingResult(text="OK", color="green", index=0),
            "1": ValueMappingResult(text="ALERT", color="red", index=1),
        }
    )
    return panel_stat(
        title,
        description,
        query(f"max({drift(gauge)})", ref_id, ref_id),
        mappings=[ok_alert],
        thresholds=steps("green", (1, "red")),
    )


def versus_reference(title: str, description: str, current: DriftGauge, reference: DriftGauge) -> timeseries.Panel:
    """A drift ratio of the current window drawn against the same ratio on the reference."""
    return panel_timeseries(
        title,
        description,
        [
            query(drift(current), "current " + LEGEND, "current"),
            query(drift(reference), "reference " + LEGEND, "reference"),
        ],
        unit="percentunit",
        minimum=0,
    )


def drift_row(limits: dict[str, Any]) -> list[Any]:
    share, drop, shift = limits["share"], limits["confidenceDrop"], limits["meanProbabilityShift"]
    stale = limits["staleAfterSeconds"]
    return [
        panel_stat(
            "Time since last drift run",
            f"Age of the newest drift run; ApdDriftJobStale fires after {stale} s.",
            query(f"time() - max({drift(G.LAST_RUN)})", "age", "age"),
            unit="s",
            thresholds=steps("green", (stale / 2, "orange"), (stale, "red")),
        ),
        panel_stat(
            "Records in window",
            "Payload records the latest run compared with the reference, per model version and endpoint.",
            query(drift(G.RECORDS), LEGEND, "records"),
        ),
        verdict_stat(
            "Dataset drift detected",
            f"The latest run's dataset-level verdict ({G.DETECTED.metric}).",
            G.DETECTED,
            "detected",
        ),
        verdict_stat(
            "Drift alert",
            f"The drift job's overall verdict ({G.ALERT.metric}); ApdPredictionDrift fires on it too.",
            G.ALERT,
            "alert",
        ),
        panel_timeseries(
            "Drift share",
            f"Share of image features drifted from the reference, per run; ApdDataDrift fires at {share}.",
            [query(drift(G.SHARE), LEGEND, "share")],
            unit="percentunit",
            thresholds=steps("green", (share, "red")),
            minimum=0,
        ),
        panel_timeseries(
            "Confidence drop",
            "Relative drop of the predictions' mean margin to the decision threshold from the reference's; "
            f"ApdConfidenceDrop fires above {drop} (the condition of the original incident).",
            [query(drift(G.CONFIDENCE_DROP), LEGEND, "drop")],
            unit="percentunit",
            thresholds=steps("green", (drop, "red")),
        ),
        panel_timeseries(
            "Mean probability shift",
            f"Mean predicted probability, current minus reference; ApdPredictionDrift fires at +/-{shift}.",
            [query(drift(G.MEAN_PROBABILITY_SHIFT), LEGEND, "shift")],
            thresholds=steps("red", (-shift, "green"), (shift, "red")),
        ),
        versus_reference(
            "Low-confidence ratio",
            "Share of predictions the model is unsure about, current window against the reference.",
            G.LOW_CONFIDENCE_RATIO,
            G.LOW_CONFIDENCE_RATIO_REFERENCE,
        ),
        versus_reference(
            "AI-generated ratio",
            "Share of images predicted ai_generated, current window against the reference.",
            G.AI_GENERATED_RATIO,
            G.AI_GENERATED_RATIO_REFERENCE,
        ),
        panel_timeseries(
            "AI-declared ratio",
            "Share of images whose own metadata declares AI origin (C2PA Content Credentials, IPTC "
            f"DigitalSourceType, generator metadata), per run ({G.AI_DECLARED_RATIO.metric}). A floor under the pixel "
            "model's AI-generated ratio: metadata is easily stripped, so a file without it proves nothing about the "
            "rest. Reported, not alerted on.",
            [query(drift(G.AI_DECLARED_RATIO), LEGEND, "declared")],
            unit="percentunit",
            minimum=0,
        ),
        panel_timeseries(
            "Per-feature drift score",
            f"Drift score of each image feature ({G.FEATURE_SCORE.metric}) and of the predicted probability "
            f"({G.PROBABILITY_DRIFT_SCORE.metric}).",
            [
                query(drift(G.FEATURE_SCORE), "{{feature}} " + LEGEND, "feature"),
                query(drift(G.PROBABILITY_DRIFT_SCORE), "probability " + LEGEND, "probability"),
            ],
            width=WIDE,
        ),
        panel_timeseries(
            "Drifted features",
            f"How many image features each run marked drifted ({G.FEATURE_DETECTED.metric}).",
            [query(f"sum by (model_version, endpoint) ({drift(G.FEATURE_DETECTED)})", LEGEND, "drifted")],
            width=WIDE,
            minimum=0,
        ),
    ]


def sink_row() -> list[Any]:
    return [
        panel_timeseries(
            "Sink events/s",
            "CloudEvents received from the predictor's logger, by type, and records written to S3.",
            [
                query(rate("apd_sink_events_total", SINK, "type"), "{{type}}", "events"),
                query(rate("apd_sink_records_written_total", SINK), "records written", "written"),
            ],
            unit="ops",
        ),
        panel_timeseries(
            "Rejected, duplicate and unpaired events",
            "Events the sink refused (by reason), dropped as duplicates, or whose request and response never paired.",
            [
                query(rate("apd_sink_rejected_total", SINK, "reason"), "rejected {{reason}}", "rej"),
                query(rate("apd_sink_duplicates_total", SINK), "duplicates", "dup"),
                query(rate("apd_sink_unpaired_total", SINK), "unpaired", "unpaired"),
            ],
            unit="ops",
            stacked=True,
        ),
        panel_timeseries(
            "WAL backlog",
            "Events in the write-ahead log not yet written to S3, per sink pod; ApdSinkBacklog fires when it "
            "grows by more than a tenth of the events received, for 10 minutes.",
            [query(f"sum by (pod) (apd_sink_wal_events{{{SINK}}})", "{{pod}}", "wal")],
            minimum=0,
        ),
        panel_timeseries(
            "S3 errors",
            "Failed S3 writes per second, per sink pod; ApdSinkS3Errors fires when they go on for 10 minutes.",
            [query(rate("apd_sink_s3_errors_total", SINK, "pod"), "{{pod}}", "errors")],
            unit="ops",
            width=WIDE,
        ),
        panel_median_p95(
            "Flush time",
            "Time to write one Parquet file of records to S3, retries included (apd_sink_flush_seconds).",
            SINK,
            {"flush": "apd_sink_flush_seconds"},
            unit="s",
        ),
    ]


def build() -> dict[str, Any]:
    """The dashboard model as Grafana's JSON (a plain dict)."""
    builder = (
        dash.Dashboard("AI Product Photo Detector")
        .uid("apd-detector")
        .description(
            "Serving, drift and payload sink of the AI product photo detector (generated by helm/dashboards.py)."
        )
        .tags(["apd", "kserve", "drift"])
        .readonly()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("utc")
        .with_variable(dash.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(variable("namespace", "Namespace", "label_values(request_predict_seconds_count, namespace)"))
        .with_variable(
            variable(
                "model_version",
                "Model version",
                'label_values(apd_predictions_total{namespace=~"$namespace"}, model_version)',
            )
        )
        .with_variable(
            variable(
                "endpoint",
                "Drift endpoint",
                f'label_values({DriftGauge.SHARE.metric}{{job="{PUSH_JOB}", namespace=~"$namespace"}}, endpoint)',
            )
        )
    )
    for title, panels in (
        ("Serving", serving_row()),
        ("Drift", drift_row(drift_thresholds())),
        ("Payload sink", sink_row()),
    ):
        builder = builder.with_row(dash.Row(title))
        for panel in panels:
            builder = builder.with_panel(panel)
    model: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for number, panel in enumerate(model["panels"], start=1):  # stable ids, in layout order
        panel["id"] = number
    return model


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is stale")
    args = parser.parse_args(argv)
    text = render()
    shown = OUTPUT.relative_to(REPO) if OUTPUT.is_relative_to(REPO) else OUTPUT
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{shown} is stale: regenerate it with `{REGENERATE}`")
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
