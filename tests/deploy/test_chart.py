"""The Helm chart (helm/apd, canonical) and the kustomize manifests rendered from it.

Nothing here reaches a cluster: the chart is linted and rendered with the pinned Helm, every rendered resource is
checked against its schema (tests/deploy/schemas.py), the alert rules with promtool, and the kustomize base and
overlays against fresh Helm renderings of the same values.
"""

import base64
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    CHART,
    CI_VALUES,
    FULL,
    MANIFESTS,
    MONITORING_APIS,
    RAW_SCALING,
    REPO,
    Helm,
    Resource,
    rendered_rules,
    resource_key,
)
from tests.deploy.schemas import validate_resources

Kustomize = Callable[[Path], list[Resource]]
# Each overlay and the ci values that make Helm render the same resources.
OVERLAYS = {"dev": "dev-values.yaml", "prod": "prod-values.yaml", "canary": "canary-values.yaml"}
# manifests/render-base.sh renders the defaults with the generated S3 Secret's own name as s3.existingSecret: the base
# references that Secret without holding random keys. Given before a ci values file, which may name another Secret.
BASE_VALUES = {"s3": {"existingSecret": "apd-s3"}}


def _ids(paths: list[Path]) -> list[str]:
    return [p.name.removesuffix("-values.yaml") for p in paths]


def by_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def one(resources: list[Resource], kind: str) -> Resource:
    found = by_kind(resources, kind)
    assert len(found) == 1, f"expected one {kind}, got {[r['metadata']['name'] for r in found]}"
    return found[0]


# ---------------------------------------------------------------------------------------------------------- lint


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["no-values", *_ids(CI_VALUES)])
def test_lint_strict(helm: Helm, values: Path | None) -> None:
    args = ["lint", "--strict", "--kube-version", "1.32", str(CHART)]
    result = helm.run(*args, *(["--values", str(values)] if values else []), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout, result.stdout
    assert "[ERROR]" not in result.stdout, result.stdout


def test_values_file_declares_its_schema() -> None:
    first = (CHART / "values.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=values.schema.json"


# Maps whose keys are Kubernetes fields or free labels, documented by the comment on the map itself.
FREE_FORM_VALUES = {
    "resources",
    "podSecurityContext",
    "containerSecurityContext",
    "kfpNamespaceLabels",
    "prometheusNamespaceLabels",
    "prometheusPodLabels",
    "labels",
}


def test_every_knob_has_a_comment_above_it() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    parents: list[tuple[int, str]] = []  # (indent, key) of the maps the current line is inside
    undocumented = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z_][\w.-]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while parents and parents[-1][0] >= indent:
            parents.pop()
        if not any(parent in FREE_FORM_VALUES for _, parent in parents):
            above = next(text for text in reversed(lines[:number]) if text.strip())
            if not above.lstrip().startswith("#"):
                undocumented.append(".".join([*(k for _, k in parents), key]))
        parents.append((indent, key))
    assert not undocumented, f"values.yaml knobs without a comment above them: {undocumented}"


# ------------------------------------------------------------------------------------------ rendered resources


@pytest.mark.parametrize("values", CI_VALUES, ids=_ids(CI_VALUES))
def test_rendered_resources_are_valid(helm: Helm, values: Path) -> None:
    """Every document of every ci variant passes its schema (built-in kinds strict, CRDs of KServe/prom-operator)."""
    resources = helm.template([values], api_versions=MONITORING_APIS)
    assert resources, f"{values.name} rendered nothing"
    validate_resources(resources)  # raises one error listing every invalid resource


def _pod_specs(obj: Resource) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """(pod-level securityContext, containers) of every workload the chart renders."""
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind == "Pod":
        yield spec.get("securityContext", {}), spec["containers"]
    elif kind in ("Deployment", "Job"):
        pod = spec["template"]["spec"]
        yield pod.get("securityContext", {}), pod["containers"] + pod.get("initContainers", [])
    elif kind == "CronJob":
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        yield pod.get("securityContext", {}), pod["containers"]
    elif kind == "ServingRuntime":
        yield {}, spec["containers"]
    elif kind == "InferenceService":  # the model containers (their image comes from the ServingRuntime), explainer
        yield {}, [spec["predictor"]["model"]] + [c["predictor"]["model"] for c in spec.get("canary", [])]
        yield {}, spec.get("explainer", {}).get("containers", [])


@pytest.mark.parametrize("values", CI_VALUES, ids=_ids(CI_VALUES))
def test_containers_run_non_root_with_pinned_images(helm: Helm, values: Path) -> None:
    resources = helm.template([values], api_versions=MONITORING_APIS)
    checked = 0
    for obj in resources:
        for pod_context, containers in _pod_specs(obj):
            for container in containers:
                where = f"{obj['kind']} {obj['metadata']['name']} container {container.get('name', 'model')}"
                context = {**pod_context, **container.get("securityContext", {})}
                assert context.get("runAsNonRoot") is True, f"{where}: runAsNonRoot is not true"
                assert context.get("runAsUser", 10001) != 0, f"{where}: runs as uid 0"
                assert context.get("allowPrivilegeEscalation") is False, f"{where}: may escalate privileges"
                assert context.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: keeps capabilities"
                assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: no seccomp"
                assert context.get("readOnlyRootFilesystem") is True, f"{where}: writable root filesystem"
                if "image" in container:
                    image = container["image"]
                    name, _, tag = image.rpartition(":")
                    assert name, f"{where}: image {image} has no explicit tag"
                    assert "/" not in tag, f"{where}: image {image} has no explicit tag"
                    assert tag != "latest", f"{where}: image {image} uses latest"
                checked += 1
    assert checked, f"{values.name}: no container found"


def test_default_images_follow_the_app_version(helm: Helm) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    runtime = one(helm.template(), "ServingRuntime")
    assert runtime["spec"]["containers"][0]["image"] == f"apd-serving:{app_version}"
    full = helm.template([FULL])
    drift = one(full, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert drift["image"] == f"apd-components:{app_version}"
    # The sink and the explainer need what the lean serving image leaves out (pandas, pyarrow, torch).
    [sink] = [d for d in by_kind(full, "Deployment") if d["metadata"]["name"] == "apd-sink"]
    assert sink["spec"]["template"]["spec"]["containers"][0]["image"] == f"apd-components:{app_version}"
    [explainer] = one(full, "InferenceService")["spec"]["explainer"]["containers"]
    assert explainer["image"] == f"apd-components:{app_version}"
    registry = helm.template(set_values=["images.registry=ghcr.io/acme", "images.serving.tag=1.2.3"])
    assert one(registry, "ServingRuntime")["spec"]["containers"][0]["image"] == "ghcr.io/acme/apd-serving:1.2.3"


# ------------------------------------------------------------------------------------ values schema and guards


@pytest.mark.parametrize(
    ("assignment", "complaint"),
    [
        ("replicas=3", "additional properties 'replicas' not allowed"),  # unknown top-level key
        ("predictor.replicas=3", "additional properties 'replicas' not allowed"),  # unknown nested key
        ("canary.trafficPercent=150", "maximum"),  # a percent above 100
        ("canary.trafficPercent=-1", "minimum"),  # a negative percent
        ("canary.enabled=true", "/canary/storageUri"),  # a canary without the new model
        ("images.serving.tag=latest", "/images/serving/tag"),  # a moving tag
        ("inferenceService.deploymentMode=ModelMesh", "/inferenceService/deploymentMode"),  # unsupported mode
        ("predictor.scaleMetric=gpu", "/predictor/scaleMetric"),  # not a KServe metric
        ("predictor.minReplicas=-1", "/predictor/minReplicas"),  # negative replicas
        ("explainer.scaleMetric=gpu", "/explainer/scaleMetric"),  # not a KServe metric
        ("explainer.maxReplicas=0", "/explainer/maxReplicas"),  # an explainer that never runs: enabled=false
        ("predictor.storageUri=/models/x", "/predictor/storageUri"),  # not a URI the storage initializer reads
        ("containerSecurityContext.runAsNonRoot=false", "/containerSecurityContext/runAsNonRoot"),  # root
        ("logger.mode=everything", "/logger/mode"),  # not a KServe logger mode
        ("drift.schedule=hourly", "/drift/schedule"),  # not a cron expression
        ("monitoring.rules.errorRatio=5", "/monitoring/rules/errorRatio"),  # a ratio above 1
        ("auth.burst=0", "/auth/burst"),  # a bucket that never holds a request
        ("auth.ratePerSecond=-1", "/auth/ratePerSecond"),  # a negative rate
        ("istio.jwt.jwksUri=jwks.json", "/istio/jwt/jwksUri"),  # not a URL the sidecar can fetch
    ],
)
def test_values_schema_rejects(helm: Helm, assignment: str, complaint: str) -> None:
    result = helm.run(*helm.template_args(set_values=[assignment]), check=False)
    assert result.returncode != 0, f"--set {assignment} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert complaint in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("assignments", "complaint"),
    [
        # HPA cannot scale on in-flight requests: only Knative can.
        (["inferenceService.deploymentMode=RawDeployment"], "needs Serverless mode"),
        # The explainer too, and HPA does not scale to zero.
        (
            ["inferenceService.deploymentMode=RawDeployment", "predictor.scaleMetric=cpu"],
            "explainer.scaleMetric=concurrency needs Serverless mode",
        ),
        (
            ["inferenceService.deploymentMode=RawDeployment", "predictor.scaleMetric=cpu", "explainer.scaleMetric=cpu"],
            "explainer.minReplicas=0 (scale to zero) needs Serverless mode",
        ),
        # The logger (on by default) needs somewhere to send the payloads.
        (["sink.enabled=false"], "set one of them, or logger.enabled=false"),
        # The drift job (on by default) finds the served model and its reference in an MLflow registry.
        (["mlflow.enabled=false"], "set mlflow.enabled=true (the chart's server) or mlflow.externalTrackingUri"),
        # MLflow on SQLite without a volume loses its registry with the pod.
        (["mlflow.persistence.enabled=false"], "enable mlflow.persistence"),
        # Generated credentials open only the chart's own MinIO.
        (["minio.enabled=false"], "minio.enabled=false needs s3.existingSecret"),
        # Without MinIO the chart needs an S3 endpoint.
        (["minio.enabled=false", "s3.existingSecret=s3-keys", "s3.endpoint="], "s3.endpoint is required"),
        # API keys come from a Secret the user creates; the chart never makes keys up.
        (["auth.enabled=true"], "auth.enabled needs auth.existingSecret"),
        # JWTs of whom, checked against which keys?
        (["istio.enabled=true", "istio.jwt.jwksUri=https://idp/jwks"], "istio.enabled needs istio.jwt.issuer"),
        (["istio.enabled=true", "istio.jwt.issuer=https://idp"], "istio.enabled needs istio.jwt.jwksUri"),
    ],
)
def test_template_refuses_inconsistent_values(helm: Helm, assignments: list[str], complaint: str) -> None:
    result = helm.run(*helm.template_args(set_values=assignments), check=False)
    assert result.returncode != 0, f"--set {assignments} was accepted"
    assert complaint in result.stderr, result.stderr


# ------------------------------------------------------------------------------------------ the InferenceService


def test_inference_service_contract(helm: Helm) -> None:
    """What the rollout CLI and the pipeline's deploy step rely on: the name, and where the model and canary live."""
    resources = helm.template(set_values=["inferenceService.name=detector-x", "predictor.storageUri=s3://b/m/1"])
    isvc = one(resources, "InferenceService")
    assert isvc["metadata"]["name"] == "detector-x"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://b/m/1"
    assert predictor["model"]["modelFormat"]["name"] == "apd-detector"
    assert "canaryTrafficPercent" not in predictor
    assert predictor["serviceAccountName"] == "apd-predictor"
    runtime = one(resources, "ServingRuntime")
    assert predictor["model"]["runtime"] == runtime["metadata"]["name"]
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == "apd-detector"
    assert runtime["spec"]["protocolVersions"] == ["v1", "v2"]
    container = runtime["spec"]["containers"][0]
    assert container["args"][:2] == ["serve", "--model_name=apd-detector"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["APD_SERVING__MODEL_URI"] == "/mnt/models"
    assert env["APD_SERVING__MODEL_NAME"] == "apd-detector"
    # OpenVINO / ONNX Runtime size their threads from the settings; nothing in the lean image reads OpenMP's.
    assert env["APD_SERVING__THREADS"] == "2"
    assert "OMP_NUM_THREADS" not in env
    # Knative takes one container port; RawDeployment declares gRPC too.
    assert [p["containerPort"] for p in container["ports"]] == [8080]
    raw = one(helm.template([CHART / "ci" / "raw-deployment-values.yaml"]), "ServingRuntime")
    assert [p["containerPort"] for p in raw["spec"]["containers"][0]["ports"]] == [8080, 8081]


def test_predictor_without_tmp_volume_keeps_a_writable_root(helm: Helm) -> None:
    """For a Knative without emptyDir support: no volume, and the model server may write to its root instead."""
    resources = helm.template(set_values=["predictor.tmpVolume.enabled=false"])
    predictor = one(resources, "InferenceService")["spec"]["predictor"]
    assert "volumes" not in predictor
    assert "volumeMounts" not in predictor["model"]
    assert predictor["model"]["securityContext"]["readOnlyRootFilesystem"] is False
    assert predictor["model"]["securityContext"]["runAsNonRoot"] is True
    runtime = one(resources, "ServingRuntime")["spec"]["containers"][0]
    assert runtime["securityContext"]["readOnlyRootFilesystem"] is False


def test_trust_anchors_come_from_a_config_map(helm: Helm) -> None:
    """The C2PA trust list is mounted read-only and named by APD_PROVENANCE__TRUST_ANCHORS; by default neither."""
    spec = one(helm.template(set_values=["runtime.trustAnchorsConfigMap=c2pa-trust"]), "ServingRuntime")["spec"]
    container = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "c2pa-trust")
    assert env["APD_PROVENANCE__TRUST_ANCHORS"] == f"{mount['mountPath']}/anchors.pem"
    assert mount["readOnly"] is True
    (volume,) = spec["volumes"]
    assert volume["configMap"] == {"name": "c2pa-trust", "items": [{"key": "anchors.pem", "path": "anchors.pem"}]}
    default = one(helm.template(), "ServingRuntime")["spec"]
    assert "volumes" not in default
    assert "APD_PROVENANCE__TRUST_ANCHORS" not in {e["name"] for e in default["containers"][0]["env"]}


def test_api_keys_are_mounted_from_an_existing_secret(helm: Helm) -> None:
    """auth.enabled: the hashes' Secret mounted read-only (a folder, no subPath: Secret updates reach the pods) in the
    model server and the page, with the APD_AUTH__ settings; by default neither; on in the prod values."""
    resources = helm.template(set_values=["auth.enabled=true", "auth.existingSecret=api-keys", "ui.enabled=true"])
    runtime = one(resources, "ServingRuntime")["spec"]
    [page] = [d for d in by_kind(resources, "Deployment") if d["metadata"]["name"] == "apd-ui"]
    page_spec = page["spec"]["template"]["spec"]
    pods = [(runtime["containers"][0], runtime["volumes"]), (page_spec["containers"][0], page_spec["volumes"])]
    for container, volumes in pods:
        env = _env(container)
        mount = next(m for m in container["volumeMounts"] if m["name"] == "api-keys")
        assert (mount["readOnly"], "subPath" in mount) == (True, False)
        assert env["APD_AUTH__ENABLED"] == "true"
        assert env["APD_AUTH__KEYS_FILE"] == f"{mount['mountPath']}/keys"
        assert (env["APD_AUTH__RATE_PER_SECOND"], env["APD_AUTH__BURST"]) == ("20", "40")
        volume = next(v for v in volumes if v["name"] == "api-keys")
        assert volume["secret"] == {"secretName": "api-keys", "items": [{"key": "keys", "path": "keys"}]}
    assert "api-keys" not in {secret["metadata"]["name"] for secret in by_kind(resources, "Secret")}  # no keys made
    default = one(helm.template(), "ServingRuntime")["spec"]["containers"][0]
    assert not any(e["name"].startswith("APD_AUTH__") for e in default["env"])
    prod = one(helm.template([CHART / "ci" / "prod-values.yaml"]), "ServingRuntime")["spec"]
    assert _env(prod["containers"][0])["APD_AUTH__ENABLED"] == "true"
    assert prod["volumes"][0]["secret"]["secretName"] == "apd-api-keys"


def test_istio_policies_guard_predictor_explainer_and_page(helm: Helm) -> None:
    """istio.enabled: per workload a RequestAuthentication (the issuer's JWKS) and an AuthorizationPolicy (a token of
    that issuer, or the open health paths), selecting the pods by KServe's labels; validated against Istio's CRDs
    with every other resource of the full variant (test_rendered_resources_are_valid)."""
    resources = helm.template([FULL])
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(resources, "AuthorizationPolicy")}
    authns = {a["metadata"]["name"]: a["spec"] for a in by_kind(resources, "RequestAuthentication")}
    assert sorted(policies) == sorted(authns) == ["apd-explainer", "apd-predictor", "apd-ui"]
    kserve = {"serving.kserve.io/inferenceservice": "apd-detector"}
    assert policies["apd-predictor"]["selector"]["matchLabels"] == {**kserve, "component": "predictor"}
    assert policies["apd-explainer"]["selector"]["matchLabels"] == {**kserve, "component": "explainer"}
    assert policies["apd-ui"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "ui"
    for name, policy in policies.items():
        assert authns[name]["selector"] == policy["selector"]
        [rule] = authns[name]["jwtRules"]
        assert rule["issuer"] == "https://accounts.example.com"
        assert rule["jwksUri"] == "https://accounts.example.com/.well-known/jwks.json"
        assert rule["audiences"] == ["apd-detector"]
        assert policy["action"] == "ALLOW"
        with_token, open_paths = policy["rules"]
        assert with_token == {"from": [{"source": {"requestPrincipals": ["https://accounts.example.com/*"]}}]}
        assert "/metrics" in open_paths["to"][0]["operation"]["paths"]
    predictor_open = policies["apd-predictor"]["rules"][1]["to"][0]["operation"]["paths"]
    probe = one(resources, "ServingRuntime")["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    assert probe in predictor_open
    assert not any(p.endswith((":predict", "/infer")) for p in predictor_open)
    assert not by_kind(helm.template(), "AuthorizationPolicy")  # off by default


def test_serverless_canary_moves_the_new_model_to_the_latest_revision(helm: Helm) -> None:
    isvc = one(helm.template([CHART / "ci" / "canary-values.yaml"]), "InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["model"]["storageUri"] == "s3://apd-mlflow/models/apd-detector/challenger"
    assert "canary" not in isvc["spec"]
    # The explainer moves the same way: explanations share the canary's model and traffic split.
    explainer = isvc["spec"]["explainer"]
    assert explainer["canaryTrafficPercent"] == 10
    assert _env(explainer["containers"][0])["STORAGE_URI"] == "s3://apd-mlflow/models/apd-detector/challenger"


def test_raw_deployment_canary_is_a_second_predictor(helm: Helm) -> None:
    isvc = one(helm.template([CHART / "ci" / "raw-canary-values.yaml"]), "InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor  # ignored by KServe in RawDeployment mode
    assert predictor["model"]["storageUri"] == "s3://apd-mlflow/models/apd-detector/champion"
    [canary] = isvc["spec"]["canary"]
    assert canary["trafficPercent"] == 25
    assert canary["predictor"]["name"] == "canary"
    assert canary["predictor"]["model"]["storageUri"] == "s3://apd-mlflow/models/apd-detector/challenger"
    assert "minReplicas" not in canary["predictor"]  # KServe refuses autoscaling fields on a canary
    # spec.canary entries hold a predictor only: the explainer stays on the stable model.
    explainer = isvc["spec"]["explainer"]
    assert "canaryTrafficPercent" not in explainer
    assert _env(explainer["containers"][0])["STORAGE_URI"] == "s3://apd-mlflow/models/apd-detector/champion"
    assert (explainer["minReplicas"], explainer["scaleMetric"]) == (1, "cpu")


def test_explainer_component(helm: Helm) -> None:
    """spec.explainer: `apd explain` in the component image on the predictor's model (KServe's storage initializer
    downloads STORAGE_URI into /mnt/models with the predictor's service account, which lists the S3 Secret), with its
    own resources and scaling; the model server forwards :explain to it. explainer.enabled=false removes both."""
    resources = helm.template(set_values=["predictor.storageUri=s3://b/m/1"], api_versions=MONITORING_APIS)
    isvc = one(resources, "InferenceService")
    explainer, predictor = isvc["spec"]["explainer"], isvc["spec"]["predictor"]
    [container] = explainer["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"].startswith("apd-components:")
    assert container["command"] == ["apd"]
    args = ["explain", "--model_name", "apd-detector", "--model_uri", "/mnt/models", "--http_port", "8080"]
    assert container["args"] == args
    env = _env(container)
    assert env["STORAGE_URI"] == predictor["model"]["storageUri"] == "s3://b/m/1"
    assert (env["OMP_NUM_THREADS"], env["HOME"]) == ("2", "/tmp")
    assert explainer["serviceAccountName"] == predictor["serviceAccountName"]
    sized = {"requests": {"cpu": "500m", "memory": "1536Mi"}, "limits": {"cpu": "2", "memory": "3Gi"}}
    assert container["resources"] == sized
    assert (explainer["minReplicas"], explainer["maxReplicas"], explainer["scaleMetric"]) == (0, 2, "concurrency")
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/models/apd-detector/ready"
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert explainer["volumes"] == predictor["volumes"]
    assert "logger" not in explainer  # the payloads the drift job reads are the predictor's
    runtime = one(resources, "ServingRuntime")["spec"]["containers"][0]
    assert _env(runtime)["APD_SERVING__EXPLAINER_HOST"] == "apd-detector-explainer.apd.svc.cluster.local"
    # The predictor's PodMonitor (and so its down and 5xx alerts) leaves the explainer's pods out.
    selector = one(resources, "PodMonitor")["spec"]["selector"]
    assert selector["matchExpressions"] == [{"key": "component", "operator": "NotIn", "values": ["explainer"]}]

    # With API keys on, the explainer checks them too: KServe routes :explain to it directly.
    keyed = one(helm.template([FULL]), "InferenceService")["spec"]["explainer"]
    assert _env(keyed["containers"][0])["APD_AUTH__ENABLED"] == "true"
    mounts = keyed["containers"][0]["volumeMounts"]
    assert {"name": "api-keys", "mountPath": "/etc/apd/auth", "readOnly": True} in mounts
    assert [v["name"] for v in keyed["volumes"]] == ["tmp", "api-keys"]

    off = helm.template(set_values=["explainer.enabled=false"])
    assert "explainer" not in one(off, "InferenceService")["spec"]
    assert "APD_SERVING__EXPLAINER_HOST" not in _env(one(off, "ServingRuntime")["spec"]["containers"][0])
    validate_resources(off)


def test_logger_autoscaling_and_scraping(helm: Helm) -> None:
    resources = helm.template([FULL])
    isvc = one(resources, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert predictor["logger"] == {"mode": "all", "url": "http://apd-sink.apd.svc.cluster.local"}
    sink_service = next(r for r in by_kind(resources, "Service") if r["metadata"]["name"] == "apd-sink")
    assert sink_service["spec"]["ports"][0]["port"] == 80
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 8)
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"


# ------------------------------------------------------------------------------------------ the monitoring loop


def _named(resources: list[Resource]) -> dict[tuple[str, str], Resource]:
    return {(r["kind"], r["metadata"]["name"]): r for r in resources}


def _env(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container["env"]}


def _secret_key_refs(node: Any) -> Iterator[dict[str, str]]:
    """Every secretKeyRef anywhere in ``node``."""
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            yield node["secretKeyRef"]
        for value in node.values():
            yield from _secret_key_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _secret_key_refs(item)


@pytest.fixture(scope="module")
def default_resources(helm: Helm) -> list[Resource]:
    """The chart's default rendering, monitors and rules included (the operator's API served)."""
    return helm.template(api_versions=MONITORING_APIS)


def test_default_install_runs_the_whole_loop(default_resources: list[Resource]) -> None:
    """A plain `helm install` runs the mission's loop: the predictor's logger -> the payload sink -> S3 (the chart's
    MinIO) -> the drift CronJob (the served model from the chart's MLflow) -> the Pushgateway -> Prometheus (monitors
    and rules, where the operator's API is served) -> the Grafana dashboard. NetworkPolicies and the page stay off."""
    resources = _named(default_resources)
    # The predictor posts every payload to the sink's Service, which sends it to the sink's pods.
    predictor = resources["InferenceService", "apd-detector"]["spec"]["predictor"]
    assert predictor["logger"] == {"mode": "all", "url": "http://apd-sink.apd.svc.cluster.local"}
    sink_service = resources["Service", "apd-sink"]["spec"]
    sink_pod = resources["Deployment", "apd-sink"]["spec"]["template"]
    assert sink_service["selector"].items() <= sink_pod["metadata"]["labels"].items()
    [sink] = sink_pod["spec"]["containers"]
    assert (sink_service["ports"][0]["port"], sink_service["ports"][0]["targetPort"]) == (80, "http")
    assert sink["args"] == ["sink"]
    assert sink["ports"][0]["name"] == "http"
    # The sink writes to the payloads bucket of the chart's MinIO, which the set-up Job creates.
    minio = "apd-minio.apd.svc.cluster.local:9000"
    assert (_env(sink)["APD_S3__ENDPOINT"], _env(sink)["APD_SINK__BUCKET"]) == (minio, "apd-payloads")
    assert resources["Service", "apd-minio"]["spec"]["ports"][0]["port"] == 9000
    [buckets] = resources["Job", "apd-minio-buckets"]["spec"]["template"]["spec"]["containers"]
    assert "apd-payloads" in str(_env(buckets)["BUCKETS"]).split()
    # The drift job reads the same bucket, finds the served model and its reference in the chart's MLflow, and
    # pushes its gauges to the chart's Pushgateway.
    [drift] = resources["CronJob", "apd-drift"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    drift_env = _env(drift)
    assert drift["args"] == ["drift", "run"]
    assert (drift_env["APD_S3__ENDPOINT"], drift_env["APD_SINK__BUCKET"]) == (minio, "apd-payloads")
    assert drift_env["APD_MLFLOW__TRACKING_URI"] == "http://apd-mlflow.apd.svc.cluster.local:5000"
    assert resources["Service", "apd-mlflow"]["spec"]["ports"][0]["port"] == 5000
    assert ("Deployment", "apd-mlflow") in resources
    assert drift_env["APD_DRIFT__PUSHGATEWAY_URL"] == "http://apd-pushgateway.apd.svc.cluster.local:9091"
    assert resources["Service", "apd-pushgateway"]["spec"]["ports"][0]["port"] == 9091
    assert ("Deployment", "apd-pushgateway") in resources
    # Every store client uses the credentials the chart generated for its MinIO.
    assert ("Secret", "apd-s3") in resources
    assert {ref["name"] for ref in _secret_key_refs(list(resources.values()))} == {"apd-s3"}
    # Prometheus scrapes the predictor, the sink and the Pushgateway, and evaluates the loop's alerts.
    for monitor in [
        ("PodMonitor", "apd-predictor"),
        ("ServiceMonitor", "apd-sink"),
        ("ServiceMonitor", "apd-pushgateway"),
    ]:
        assert monitor in resources, monitor
    groups = {g["name"] for g in resources["PrometheusRule", "apd-serving"]["spec"]["groups"]}
    assert groups == {"apd-serving-slo", "apd-drift", "apd-sink"}
    # Grafana's sidecar loads the dashboard.
    dashboards = resources["ConfigMap", "apd-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "apd-detector.json" in dashboards["data"]
    # What depends on the cluster stays off.
    assert not [key for key in resources if key[0] == "NetworkPolicy" or key[1] == "apd-ui"]


# Each off-switch of the loop and its stores: the values that turn it off (with what the parts needing it then
# need instead) and the resources that go with it; nothing else may go.
OFF_SWITCHES: dict[str, tuple[list[str], set[tuple[str, str]]]] = {
    # Only the predictor's logger field goes.
    "logger": (["logger.enabled=false"], set()),
    # The sink, its Service and its monitor; the logger has nowhere to post then.
    "sink": (
        ["sink.enabled=false", "logger.enabled=false"],
        {("Service", "apd-sink"), ("Deployment", "apd-sink"), ("ServiceMonitor", "apd-sink")},
    ),
    "drift": (["drift.enabled=false"], {("CronJob", "apd-drift")}),
    "pushgateway": (
        ["monitoring.pushgateway.enabled=false"],
        {("Service", "apd-pushgateway"), ("Deployment", "apd-pushgateway"), ("ServiceMonitor", "apd-pushgateway")},
    ),
    "podMonitor": (["monitoring.podMonitor.enabled=false"], {("PodMonitor", "apd-predictor")}),
    "serviceMonitor": (
        ["monitoring.serviceMonitor.enabled=false"],
        {("ServiceMonitor", "apd-sink"), ("ServiceMonitor", "apd-pushgateway")},
    ),
    "rules": (["monitoring.rules.enabled=false"], {("PrometheusRule", "apd-serving")}),
    "dashboards": (["monitoring.dashboards.enabled=false"], {("ConfigMap", "apd-dashboards")}),
    # MinIO and the credentials generated for it; the store is then the one at s3.endpoint.
    "minio": (
        ["minio.enabled=false", "s3.existingSecret=s3-keys"],
        {
            ("PersistentVolumeClaim", "apd-minio"),
            ("Service", "apd-minio"),
            ("Deployment", "apd-minio"),
            ("Job", "apd-minio-buckets"),
            ("Secret", "apd-s3"),
        },
    ),
    # MLflow; the drift job then reads the registry at externalTrackingUri.
    "mlflow": (
        ["mlflow.enabled=false", "mlflow.externalTrackingUri=http://mlflow.example:5000"],
        {("PersistentVolumeClaim", "apd-mlflow"), ("Service", "apd-mlflow"), ("Deployment", "apd-mlflow")},
    ),
}


@pytest.mark.parametrize("part", OFF_SWITCHES)
def test_each_off_switch_removes_its_part(helm: Helm, default_resources: list[Resource], part: str) -> None:
    assignments, removed = OFF_SWITCHES[part]
    default = _named(default_resources)
    resources = helm.template(set_values=assignments, api_versions=MONITORING_APIS)
    variant = _named(resources)
    assert removed <= set(default), f"{part}: not in the default rendering: {removed - set(default)}"
    assert set(default) - set(variant) == removed
    assert set(variant) <= set(default)
    validate_resources(resources)  # what is left is still valid
    predictor = variant["InferenceService", "apd-detector"]["spec"]["predictor"]
    assert ("logger" in predictor) is (part not in ("logger", "sink"))
    if ("CronJob", "apd-drift") in variant:
        [drift] = variant["CronJob", "apd-drift"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        drift_env = _env(drift)
        assert ("APD_DRIFT__PUSHGATEWAY_URL" in drift_env) is (part != "pushgateway")
        expected_uri = (
            "http://mlflow.example:5000" if part == "mlflow" else "http://apd-mlflow.apd.svc.cluster.local:5000"
        )
        assert drift_env["APD_MLFLOW__TRACKING_URI"] == expected_uri
        assert drift_env["APD_S3__ENDPOINT"] == (
            "s3.amazonaws.com" if part == "minio" else "apd-minio.apd.svc.cluster.local:9000"
        )
    if part == "drift":  # no drift job, no drift alerts (ApdDriftMetricsMissing would fire forever)
        groups = {g["name"] for g in variant["PrometheusRule", "apd-serving"]["spec"]["groups"]}
        assert groups == {"apd-serving-slo", "apd-sink"}


# ------------------------------------------------------------------------------------------ storage and secrets


def test_existing_secret_is_referenced_not_created(helm: Helm) -> None:
    resources = helm.template([CHART / "ci" / "prod-values.yaml"])
    assert not by_kind(resources, "Secret"), "the chart must not ship credentials"
    account = one(resources, "ServiceAccount")
    assert account["secrets"] == [{"name": "apd-s3-credentials"}]
    refs = {ref["name"] for ref in _secret_key_refs(resources)} - {"apd-mlflow-db"}
    assert refs == {"apd-s3-credentials"}


def test_dev_secret_is_generated_with_storage_annotations(helm: Helm) -> None:
    """The default: random credentials for the chart's MinIO, annotated for KServe's storage initializer."""
    first, second = (one(helm.template(), "Secret") for _ in range(2))
    annotations = first["metadata"]["annotations"]
    assert annotations["serving.kserve.io/s3-endpoint"] == "apd-minio.apd.svc.cluster.local:9000"
    assert annotations["serving.kserve.io/s3-usehttps"] == "0"
    assert annotations["helm.sh/resource-policy"] == "keep"
    keys = {k: base64.b64decode(v).decode() for k, v in first["data"].items()}
    assert len(keys["AWS_ACCESS_KEY_ID"]) == 20
    assert len(keys["AWS_SECRET_ACCESS_KEY"]) == 40
    # Random per render here; on a cluster `lookup` keeps the first ones (helm template cannot look up).
    assert first["data"] != second["data"]


def test_mlflow_stores_artifacts_on_s3_without_proxying(helm: Helm) -> None:
    resources = helm.template([FULL])
    mlflow = next(r for r in by_kind(resources, "Deployment") if r["metadata"]["name"] == "apd-mlflow")
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    assert "--default-artifact-root=s3://apd-mlflow/" in container["args"]
    assert "--no-serve-artifacts" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://apd-minio.apd.svc.cluster.local:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "apd-s3",
        "key": "AWS_SECRET_ACCESS_KEY",
    }
    with_secret = helm.template(
        [FULL], set_values=["mlflow.backendStore.existingSecret=mlflow-db", "mlflow.persistence.enabled=false"]
    )
    mlflow = next(r for r in by_kind(with_secret, "Deployment") if r["metadata"]["name"] == "apd-mlflow")
    env = {e["name"]: e for e in mlflow["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "uri"}


# ------------------------------------------------------------------------------------------ RBAC and networking


def test_pipeline_role_can_patch_only_inference_services(helm: Helm) -> None:
    resources = helm.template(set_values=["rbac.pipelineNamespace=kubeflow"])
    role = one(resources, "Role")
    granted = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    assert ("serving.kserve.io", "inferenceservices", "patch") in granted
    assert {r for _, r, _ in granted} <= {"inferenceservices", "inferenceservices/status"}
    binding = one(resources, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}]


def test_network_policies_fence_sink_and_minio(helm: Helm) -> None:
    policies = {p["metadata"]["name"]: p for p in by_kind(helm.template([FULL]), "NetworkPolicy")}
    assert set(policies) == {"apd-sink", "apd-minio", "apd-mlflow"}
    sink_peers = policies["apd-sink"]["spec"]["ingress"][0]["from"]
    assert sink_peers[0] == {"podSelector": {"matchLabels": {"serving.kserve.io/inferenceservice": "apd-detector"}}}
    assert sink_peers[1]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    assert len(sink_peers) == 2
    minio_peers = policies["apd-minio"]["spec"]["ingress"][0]["from"]
    assert all("podSelector" in peer for peer in minio_peers), "MinIO must not admit whole namespaces"
    assert not by_kind(helm.template(), "NetworkPolicy")


# ---------------------------------------------------------------------------------------------------- monitoring


def test_monitoring_resources_need_the_operator_api(helm: Helm) -> None:
    without = {r["kind"] for r in helm.template([FULL])}
    assert not without & {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
    with_api = {r["kind"] for r in helm.template([FULL], api_versions=MONITORING_APIS)}
    assert {"PodMonitor", "ServiceMonitor", "PrometheusRule"} <= with_api


def _rules(helm: Helm, tmp_path: Path, *values: str) -> Path:
    """The PrometheusRule's spec (a plain Prometheus rule file) of the full variant, written for promtool."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rendered_rules(helm, *values)))
    return path


def _expected_alert(rules: Path, name: str, value: str) -> dict[str, Any]:
    """The alert ``name`` as promtool reports it, its annotations' ``$value`` rendered as ``value``."""
    rule = next(r for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"] if r.get("alert") == name)
    annotations = {
        key: re.sub(r"\{\{ \$value \| humanize\w+ \}\}", value, text) for key, text in rule["annotations"].items()
    }
    return {"exp_labels": rule["labels"], "exp_annotations": annotations}


@pytest.mark.parametrize("mode", ["Serverless", "RawDeployment"])
def test_alert_rules_pass_promtool(helm: Helm, promtool: str, tmp_path: Path, mode: str) -> None:
    extra = RAW_SCALING if mode == "RawDeployment" else ()
    rules = _rules(helm, tmp_path, f"inferenceService.deploymentMode={mode}", *extra)
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_synthetic_series(helm: Helm, promtool: str, tmp_path: Path) -> None:
    """promtool's rule unit tests: slow predictions and a flood of invalid images raise their alerts."""
    rules = _rules(helm, tmp_path)
    job = 'job="apd/apd-predictor"'
    model = f'{job}, model_name="apd-detector"'
    series = [
        # 1 request/s, all slower than 1 s: p95 above the 0.5 s threshold.
        {"series": f'request_predict_seconds_bucket{{{model}, le="0.5"}}', "values": "0+0x40"},
        {"series": f'request_predict_seconds_bucket{{{model}, le="1"}}', "values": "0+0x40"},
        {"series": f'request_predict_seconds_bucket{{{model}, le="+Inf"}}', "values": "0+60x40"},
        {"series": f"request_predict_seconds_count{{{model}}}", "values": "0+60x40"},
        # Half the requests rejected: above the 20 % threshold.
        {"series": f'apd_invalid_requests_total{{{job}, reason="not_an_image"}}', "values": "0+30x40"},
        {"series": f'up{{{job}, pod="p1"}}', "values": "1x40"},
    ]
    alert_test = {
        "rule_files": [rules.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "30m",
                        "alertname": "ApdHighPredictLatencyP95",
                        "exp_alerts": [_expected_alert(rules, "ApdHighPredictLatencyP95", "1s")],
                    },
                    {
                        "eval_time": "35m",
                        "alertname": "ApdHighInvalidRequestRatio",
                        "exp_alerts": [_expected_alert(rules, "ApdHighInvalidRequestRatio", "50%")],
                    },
                    {"eval_time": "30m", "alertname": "ApdPredictorDown", "exp_alerts": []},
                ],
            }
        ],
    }
    test_file = tmp_path / "alerts_test.yaml"
    test_file.write_text(yaml.safe_dump(alert_test))
    result = subprocess.run(
        [promtool, "test", "rules", test_file.name], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_config_map_loads_every_json_file(helm: Helm, tmp_path: Path) -> None:
    chart = tmp_path / "apd"
    shutil.copytree(CHART, chart)
    shipped = sorted(p.name for p in (chart / "dashboards").glob("*.json"))
    (chart / "dashboards" / "zz-extra.json").write_text(json.dumps({"title": "extra", "panels": []}))
    resources = helm.template([FULL], chart=chart)
    config_map = next(r for r in by_kind(resources, "ConfigMap") if r["metadata"]["name"] == "apd-dashboards")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert sorted(config_map["data"]) == sorted([*shipped, "zz-extra.json"])
    assert json.loads(config_map["data"]["zz-extra.json"])["title"] == "extra"
    for name in shipped:  # the committed dashboards are valid JSON
        json.loads(config_map["data"][name])
    # An empty folder renders no ConfigMap rather than an empty one.
    for path in (chart / "dashboards").glob("*.json"):
        path.unlink()
    assert not [
        r for r in by_kind(helm.template([FULL], chart=chart), "ConfigMap") if "dashboards" in r["metadata"]["name"]
    ]


def test_helm_test_pod_checks_v2_readiness(helm: Helm) -> None:
    pods = [r for r in helm.template() if r["kind"] == "Pod"]
    [pod] = pods
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    url = pod["spec"]["containers"][0]["args"][-1]
    assert url == "http://apd-detector-predictor.apd.svc.cluster.local/v2/models/apd-detector/ready"


def _notes(helm: Helm, tmp_path: Path, *values: Path) -> str:
    """NOTES.txt as `helm install` prints it: `helm template` skips it and `install --dry-run` needs a cluster,
    so a copy of the chart wraps it in a ConfigMap."""
    chart = tmp_path / "apd"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "apd/templates/NOTES.txt" . | toJson }}\n'
    )
    [probe] = [r for r in helm.template(values, chart=chart) if r["metadata"]["name"] == "notes"]
    return str(probe["data"]["notes"])


def test_notes_explain_how_to_call_and_canary(helm: Helm, tmp_path: Path) -> None:
    text = _notes(helm, tmp_path)
    assert text.startswith("The detector is deployed as InferenceService apd-detector")
    assert "curl -s $URL/v1/models/apd-detector:predict" in text
    assert "--set canary.enabled=true" in text
    # The default install: dev credentials, and the loop with where each step sends its data.
    assert "WARNING: s3.existingSecret is empty" in text
    assert "see the chart's ci/prod-values.yaml" in text
    assert "posts the payloads to http://apd-sink.apd.svc.cluster.local" in text
    assert "s3://apd-payloads/" in text
    assert "from MLflow at http://apd-mlflow.apd.svc.cluster.local:5000" in text
    assert "pushes its gauges to http://apd-pushgateway.apd.svc.cluster.local:9091" in text
    assert "kubectl -n apd create job --from=cronjob/apd-drift" in text
    # Rendered without the operator's API: the monitors and the rule are named as left out.
    assert "not created: PodMonitor, PrometheusRule, ServiceMonitor." in text
    prod = _notes(helm, tmp_path / "prod", CHART / "ci" / "prod-values.yaml")
    assert "kubectl -n apd annotate secret apd-s3-credentials" in prod
    assert "serving.kserve.io/s3-endpoint=s3.amazonaws.com" in prod
    assert "WARNING: s3.existingSecret is empty" not in prod
    assert '-H "X-API-Key: $KEY"' in prod  # API keys are on in production
    assert "Secret\n   apd-api-keys, key keys" in prod
    assert "X-API-Key" not in text  # off by default


# ------------------------------------------------------------------------------------------------- kustomize


def test_base_is_the_chart_with_default_values(helm: Helm, tmp_path: Path) -> None:
    out = tmp_path / "apd.yaml"
    env = {**helm.env, "HELM": str(helm.binary)}
    result = subprocess.run(
        [str(MANIFESTS / "render-base.sh"), str(out)], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
    committed = MANIFESTS / "base" / "apd.yaml"
    assert committed.read_text() == out.read_text(), (
        "manifests/base/apd.yaml is stale: regenerate it with `make manifests` (manifests/render-base.sh)"
    )


@pytest.mark.parametrize("overlay", ["base", *(f"overlays/{name}" for name in OVERLAYS)])
def test_kustomize_renders_valid_resources(kustomize: Kustomize, overlay: str) -> None:
    resources = kustomize(MANIFESTS / overlay)
    assert resources
    validate_resources(resources)  # raises one error listing every invalid resource


@pytest.mark.parametrize(("overlay", "values"), OVERLAYS.items())
def test_overlay_equals_helm_rendering(
    helm: Helm, kustomize: Kustomize, tmp_path: Path, overlay: str, values: str
) -> None:
    """Each overlay and `helm template -f ci/<values>` produce the same objects (parsed, order aside)."""
    base_values = tmp_path / "base-values.yaml"
    base_values.write_text(yaml.safe_dump(BASE_VALUES))
    from_kustomize = {resource_key(r): r for r in kustomize(MANIFESTS / "overlays" / overlay)}
    from_helm = {resource_key(r): r for r in helm.template([base_values, CHART / "ci" / values], skip_tests=True)}
    assert sorted(from_kustomize) == sorted(from_helm)
    for key, rendered in from_helm.items():
        assert from_kustomize[key] == rendered, f"{overlay}: {key} differs from helm with ci/{values}"


def test_get_helm_is_idempotent(helm: Helm) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "helm" / "get-helm.py")], capture_output=True, text=True, check=True, timeout=60
    )
    assert Path(result.stdout.strip()) == helm.binary
    version = helm.run("version", "--short").stdout
    assert version.startswith("v3.19.0"), version
