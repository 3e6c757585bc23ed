"""The offline schema checks: KServe and prometheus-operator CRDs with jsonschema, built-in kinds strict."""

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.get_schemas import SCHEMAS_ENV
from tests.deploy.schemas import InvalidResourceError, crd_to_json_schema, validate_resource

ISVC: dict[str, Any] = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {
        "name": "apd-detector",
        "namespace": "apd",
        "annotations": {"serving.kserve.io/deploymentMode": "Serverless"},
    },
    "spec": {
        "predictor": {
            "minReplicas": 1,
            "canaryTrafficPercent": 10,
            "model": {
                "modelFormat": {"name": "apd-detector"},
                "runtime": "apd-detector",
                "storageUri": "s3://models/apd-detector/3",
                "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": 2147483648}},
            },
        }
    },
}

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "apd-sink", "labels": {"app.kubernetes.io/name": "apd-sink"}},
    "spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "apd-sink"}},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "apd-sink"}},
            "spec": {
                "containers": [{"name": "sink", "image": "apd-serving:0.1.0", "ports": [{"containerPort": 8080}]}]
            },
        },
    },
}

SERVICE_MONITOR: dict[str, Any] = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "ServiceMonitor",
    "metadata": {"name": "apd-sink"},
    "spec": {
        "selector": {"matchLabels": {"app.kubernetes.io/name": "apd-sink"}},
        "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
    },
}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with the dotted ``path`` set to ``value``."""
    obj = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = obj
    for key in parents:
        node = node[key]
    node[leaf] = value
    return obj


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(ISVC, id="inferenceservice"),  # the canary shape apd rollout writes
        pytest.param(DEPLOYMENT, id="deployment"),  # built-in kind, strict 1.32 schema
        pytest.param(SERVICE_MONITOR, id="servicemonitor"),  # prometheus-operator CRD
    ],
)
def test_valid_resources_pass(obj: dict[str, Any]) -> None:
    validate_resource(obj)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        # a typo'd field is dropped silently by a lenient server: strict validation must catch it
        (_with(ISVC, "spec.predictor.canaryTrafficPercnt", 10), "canaryTrafficPercnt"),
        # the percentage is an integer, not a word
        (_with(ISVC, "spec.predictor.canaryTrafficPercent", "ten"), "spec.predictor.canaryTrafficPercent"),
        # int-or-string quantities take neither a list nor a bool
        (_with(ISVC, "spec.predictor.model.resources.limits", {"memory": [1]}), "limits.memory"),
        # a built-in kind with an unknown field
        (_with(DEPLOYMENT, "spec.replica", 2), "'replica' was unexpected"),
        # an unknown field in a prometheus-operator resource
        (_with(SERVICE_MONITOR, "spec.endpoint", []), "'endpoint' was unexpected"),
        # no schema at all for this kind: an error, never a silent pass
        ({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}, "unknown kind"),
        # a kind the KServe group does not define
        ({"apiVersion": "serving.kserve.io/v1beta1", "kind": "Canary", "metadata": {"name": "c"}}, "unknown kind"),
        # a version the CRD does not serve
        (_with(ISVC, "apiVersion", "serving.kserve.io/v1alpha1"), "serves only v1beta1"),
        # not a Kubernetes object
        ({"kind": "Deployment"}, "apiVersion and kind"),
    ],
)
def test_invalid_resources_fail(obj: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidResourceError, match=re.escape(expected)):
        validate_resource(obj)


def test_error_names_kind_and_name() -> None:
    with pytest.raises(AssertionError) as info:
        validate_resource(_with(ISVC, "spec.predictor.canaryTrafficPercent", "ten"))
    assert "InferenceService apd-detector" in str(info.value)


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        # extensions dropped, int-or-string widened
        (
            {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            {"type": ["integer", "string"], "anyOf": [{"type": "integer"}, {"type": "string"}]},
        ),
        # nullable admits null, in type and enum
        ({"type": "string", "nullable": True, "enum": ["a"]}, {"type": ["string", "null"], "enum": ["a", None]}),
        # objects are closed ...
        ({"type": "object", "properties": {}}, {"type": "object", "properties": {}, "additionalProperties": False}),
        # ... unless they preserve unknown fields
        ({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, {"type": "object"}),
        # maps keep their value schema
        (
            {"type": "object", "additionalProperties": {"type": "string"}, "x-kubernetes-map-type": "atomic"},
            {"type": "object", "additionalProperties": {"type": "string"}},
        ),
    ],
)
def test_conversion(node: dict[str, Any], expected: dict[str, Any]) -> None:
    assert crd_to_json_schema(node) == expected


def test_missing_schemas_dir_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCHEMAS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(InvalidResourceError, match=SCHEMAS_ENV):
        validate_resource(ISVC)
