"""How the chart scales the predictor out: one `apd serve` worker per pod, and replicas added by the autoscaler of
each KServe mode (helm/apd/README.md, "Scaling out").

- Serverless: Knative's autoscaler on concurrency or rps (``scaleMetric``/``scaleTarget``, min/max replicas).
- Standard / RawDeployment: a HorizontalPodAutoscaler on CPU (``scaleMetric: cpu``), or KEDA on a Prometheus query
  (annotation ``serving.kserve.io/autoscalerClass: keda``, ``spec.predictor.autoScaling`` with an External metric).

Each rendering is validated offline against KServe v0.20's InferenceService CRD (tests/deploy/schemas.py). What
KServe's webhook would refuse (scaleMetric with KEDA, cpu under Knative's default autoscaler), the chart refuses
at render time with what to set.
"""

from pathlib import Path
from typing import Any

import pytest

from serving import metrics
from tests.deploy.conftest import CHART, CI_VALUES, MONITORING_APIS, Helm, Resource
from tests.deploy.schemas import validate_resources

KEDA_VALUES = CHART / "ci" / "keda-values.yaml"
RAW_VALUES = CHART / "ci" / "raw-deployment-values.yaml"
PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"
# A Standard-mode rendering with KEDA on and nothing else changed: the explainer scales on CPU, at least one pod.
KEDA = (
    "inferenceService.deploymentMode=Standard",
    "predictor.keda.enabled=true",
    f"predictor.keda.serverAddress={PROMETHEUS}",
    "explainer.scaleMetric=cpu",
    "explainer.minReplicas=1",
)
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
AUTOSCALING_FIELDS = ("scaleMetric", "scaleTarget", "autoScaling")


def _one(resources: list[Resource], kind: str) -> Resource:
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _isvc(helm: Helm, values: tuple[Path, ...] = (), set_values: tuple[str, ...] = ()) -> Resource:
    """The rendered InferenceService, checked against KServe v0.20's CRD before any field is looked at."""
    isvc = _one(helm.template(list(values), set_values=list(set_values)), "InferenceService")
    validate_resources([isvc])
    return isvc


def _scaling(component: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling fields a KServe component sets."""
    keys = ("minReplicas", "maxReplicas", *AUTOSCALING_FIELDS)
    return {key: component[key] for key in keys if key in component}


def _runtime_container(resources: list[Resource]) -> dict[str, Any]:
    return dict(_one(resources, "ServingRuntime")["spec"]["containers"][0])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container["env"]}


def _whole_cores(quantity: Any) -> int:
    """A CPU quantity ("2", 2, "1500m") in whole cores, rounded down."""
    text = str(quantity)
    return int(text[:-1]) // 1000 if text.endswith("m") else int(float(text))


# ---------------------------------------------------------------------------------------------- Serverless (Knative)


def test_serverless_scales_on_concurrency_by_default(helm: Helm) -> None:
    """The defaults: Knative's autoscaler, 8 requests in flight per replica, 1-3 replicas; no KEDA, no HPA fields."""
    isvc = _isvc(helm)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert AUTOSCALER_CLASS not in isvc["metadata"]["annotations"]
    predictor = isvc["spec"]["predictor"]
    assert _scaling(predictor) == {"minReplicas": 1, "maxReplicas": 3, "scaleMetric": "concurrency", "scaleTarget": 8}
    assert _scaling(isvc["spec"]["explainer"]) == {
        "minReplicas": 0,
        "maxReplicas": 2,
        "scaleMetric": "concurrency",
        "scaleTarget": 2,
    }


def test_serverless_rps_values_of_the_sizing_example(helm: Helm) -> None:
    """The README's Serverless values: rps, 38 a replica (Knative aims at 70 % of it), 5-28 replicas."""
    values = ("predictor.scaleMetric=rps", "predictor.scaleTarget=38", "predictor.minReplicas=5")
    isvc = _isvc(helm, set_values=(*values, "predictor.maxReplicas=28"))
    predictor = isvc["spec"]["predictor"]
    assert _scaling(predictor) == {"minReplicas": 5, "maxReplicas": 28, "scaleMetric": "rps", "scaleTarget": 38}


def test_serverless_cpu_needs_knatives_hpa_class(helm: Helm) -> None:
    """With Knative's HPA class named in the annotations, cpu is what KServe accepts, for both components."""
    knative_hpa = "inferenceService.annotations.autoscaling\\.knative\\.dev/class=hpa.autoscaling.knative.dev"
    isvc = _isvc(helm, set_values=(knative_hpa, "predictor.scaleMetric=cpu", "explainer.scaleMetric=cpu"))
    assert isvc["metadata"]["annotations"]["autoscaling.knative.dev/class"] == "hpa.autoscaling.knative.dev"
    assert isvc["spec"]["predictor"]["scaleMetric"] == isvc["spec"]["explainer"]["scaleMetric"] == "cpu"


# ------------------------------------------------------------------------------------------ Standard: HPA on CPU


@pytest.mark.parametrize("mode", ["RawDeployment", "Standard"])
def test_standard_scales_on_cpu_with_an_hpa(helm: Helm, mode: str) -> None:
    """ci/raw-deployment-values.yaml: KServe's default HPA, on 70 % of the CPU requests, 2-6 replicas."""
    isvc = _isvc(helm, (RAW_VALUES,), (f"inferenceService.deploymentMode={mode}",))
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
    assert AUTOSCALER_CLASS not in isvc["metadata"]["annotations"]  # KServe's default class: hpa
    predictor = isvc["spec"]["predictor"]
    assert _scaling(predictor) == {"minReplicas": 2, "maxReplicas": 6, "scaleMetric": "cpu", "scaleTarget": 70}
    assert _scaling(isvc["spec"]["explainer"])["scaleMetric"] == "cpu"


# ------------------------------------------------------------------------------ Standard: KEDA on a Prometheus query


def test_keda_renders_an_external_prometheus_metric(helm: Helm) -> None:
    """ci/keda-values.yaml: the autoscalerClass annotation, one External metric of the prometheus backend, the
    per-replica target; no scaleMetric/scaleTarget (KServe refuses them with KEDA); the explainer via KEDA on CPU."""
    isvc = _isvc(helm, (KEDA_VALUES,))
    annotations = isvc["metadata"]["annotations"]
    assert (annotations["serving.kserve.io/deploymentMode"], annotations[AUTOSCALER_CLASS]) == ("Standard", "keda")
    predictor = isvc["spec"]["predictor"]
    query = 'sum(rate(apd_preprocess_seconds_count{job="apd/apd-predictor"}[2m]))'
    external = {"metric": {"backend": "prometheus", "serverAddress": PROMETHEUS, "query": query}}
    assert _scaling(predictor) == {
        "minReplicas": 5,
        "maxReplicas": 28,
        "autoScaling": {
            "metrics": [{"type": "External", "external": {**external, "target": {"type": "Value", "value": "26.6"}}}]
        },
    }
    cpu = {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert _scaling(isvc["spec"]["explainer"]) == {
        "minReplicas": 1,
        "maxReplicas": 2,
        "autoScaling": {"metrics": [{"type": "Resource", "resource": cpu}]},
    }


def test_keda_default_query_reads_the_series_the_chart_scrapes(helm: Helm) -> None:
    """The default query names the metric the model server exports for each image it scores, under the job label
    Prometheus gives the chart's PodMonitor (<namespace>/<name>), as the alert rules read it."""
    resources = helm.template([KEDA_VALUES], set_values=["fullnameOverride=shop"], api_versions=MONITORING_APIS)
    query = _one(resources, "InferenceService")["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]
    monitor = _one(resources, "PodMonitor")["metadata"]
    job = f'job="{monitor["namespace"]}/{monitor["name"]}"'
    assert job == 'job="apd/shop-predictor"'
    [histogram] = metrics.PREPROCESS_SECONDS.describe()
    exported = histogram.name  # apd_preprocess_seconds; its count series adds _count
    assert query["metric"]["query"] == f"sum(rate({exported}_count{{{job}}}[2m]))"
    rules = _one(resources, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert any(job in rule["expr"] for rule in rules)  # the same selector as the serving alerts


def test_keda_takes_a_custom_query_and_a_numeric_target(helm: Helm) -> None:
    """A query of the user's own (here with minReplicas 0: a signal seen before any pod scores can wake KEDA) and a
    target given as a number by --set, rendered as the quantity string KServe reads."""
    query = 'sum(rate(request_predict_seconds_count{model_name="apd-detector"}[1m]))'
    values = (*KEDA, f"predictor.keda.query={query}", "predictor.keda.targetValue=30", "predictor.minReplicas=0")
    predictor = _isvc(helm, set_values=values)["spec"]["predictor"]
    [metric] = predictor["autoScaling"]["metrics"]
    assert (metric["external"]["metric"]["query"], metric["external"]["target"]["value"]) == (query, "30")
    assert predictor["minReplicas"] == 0


def test_keda_leaves_a_raw_canary_at_fixed_replicas(helm: Helm) -> None:
    """KServe refuses autoscaling fields on spec.canary entries: with KEDA on, the canary gets none either."""
    canary = ("canary.enabled=true", "canary.storageUri=s3://apd-mlflow/models/apd-detector/challenger")
    isvc = _isvc(helm, set_values=(*KEDA, *canary))
    [entry] = isvc["spec"]["canary"]
    assert not set(entry["predictor"]) & {"minReplicas", "maxReplicas", *AUTOSCALING_FIELDS}
    assert "autoScaling" in isvc["spec"]["predictor"]


# --------------------------------------------------------------------------------------- refused at render time


@pytest.mark.parametrize(
    ("assignments", "complaint"),
    [
        # KEDA scales Deployments; Knative revisions have Knative's autoscaler.
        (["predictor.keda.enabled=true", f"predictor.keda.serverAddress={PROMETHEUS}"], "needs inferenceService."),
        # KEDA has to know which Prometheus to ask.
        ([k for k in KEDA if "serverAddress" not in k], "needs predictor.keda.serverAddress"),
        # The default query reads the PodMonitor's series.
        ([*KEDA, "monitoring.podMonitor.enabled=false"], "enable it or give the query"),
        # No pod scores an image at zero replicas: the default query would hold KEDA at zero for good.
        ([*KEDA, "predictor.minReplicas=0"], "KEDA would never scale up again"),
        # KServe's webhook refuses cpu under Knative's default autoscaler (KPA), for the predictor...
        (["predictor.scaleMetric=cpu"], "which scales on concurrency or rps"),
        # ... and for the explainer.
        (["explainer.scaleMetric=memory"], "explainer.scaleMetric=memory is refused by KServe"),
        # An HPA cannot scale on requests in flight; the message names KEDA as the way to a traffic metric.
        (["inferenceService.deploymentMode=Standard"], "or on a Prometheus query with predictor.keda.enabled"),
    ],
)
def test_template_refuses_autoscaling_kserve_would_refuse(helm: Helm, assignments: list[str], complaint: str) -> None:
    result = helm.run(*helm.template_args(set_values=assignments), check=False)
    assert result.returncode != 0, f"--set {assignments} was accepted"
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("assignment", "path"),
    [
        ("predictor.keda.targetValue=0", "/predictor/keda/targetValue"),  # a target no load ever stays under
        ("predictor.keda.targetValue=many", "/predictor/keda/targetValue"),  # not a number
        ("predictor.keda.serverAddress=prometheus:9090", "/predictor/keda/serverAddress"),  # no scheme: not a URL
        ("predictor.keda.interval=30s", "additional properties 'interval' not allowed"),  # not a knob of the chart
    ],
)
def test_values_schema_rejects_bad_keda_values(helm: Helm, assignment: str, path: str) -> None:
    result = helm.run(*helm.template_args(set_values=[assignment]), check=False)
    assert result.returncode != 0, f"--set {assignment} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert path in result.stderr, result.stderr


# ----------------------------------------------------------------------------- one worker per pod, threads = cores


@pytest.mark.parametrize("values", CI_VALUES, ids=[p.name.removesuffix("-values.yaml") for p in CI_VALUES])
def test_every_variant_runs_one_worker_with_a_thread_per_core(helm: Helm, values: Path) -> None:
    """Replicas scale the predictor, not --workers (KServe's workers share a socket: the kernel spreads connections,
    not requests): each ci variant runs one worker whose inference threads are the pod's CPU limit."""
    resources = helm.template([values])
    container = _runtime_container(resources)
    assert "--workers=1" in container["args"]
    limit = _one(resources, "InferenceService")["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"]
    assert _env(container)["APD_SERVING__THREADS"] == str(max(1, _whole_cores(limit)))


@pytest.mark.parametrize(
    ("assignments", "threads"),
    [
        ([], "2"),  # the default limit of 2 CPUs: 2 threads
        (["predictor.resources.limits.cpu=4"], "4"),  # a bigger pod: a thread per core
        (["predictor.resources.limits.cpu=1500m"], "1"),  # a fraction of a core is not a thread
        (["predictor.resources.limits.cpu=500m"], "1"),  # under a core: still one thread
        (["predictor.resources.limits.cpu=4", "runtime.workers=2"], "2"),  # the cores shared among the workers
        (["runtime.threads=3"], "3"),  # set explicitly: as given
        (["predictor.resources.limits=null"], "0"),  # no CPU limit: the server takes the cores it may run on
    ],
)
def test_threads_follow_the_cpu_limit(helm: Helm, assignments: list[str], threads: str) -> None:
    container = _runtime_container(helm.template(set_values=assignments))
    assert _env(container)["APD_SERVING__THREADS"] == threads
