"""apd rollout and the deploy step: the exact merge patches per command and deployment mode, that the patched
InferenceService still passes KServe's CRD schema, status output, errors, dry runs.

The model versions come from a real MLflow registry on a temporary SQLite file; the Kubernetes API is a fake
(FakeCustomObjectsApi), because no API server can run here.
"""

import copy
import json
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest

import components.deploy as deploy_module
from components.cli import main
from components.common.errors import DeployError
from components.deploy import (
    STABLE_URI_ANNOTATION,
    VERSION_ANNOTATION,
    canary_plan,
    changed_fields,
    deployment_mode,
    format_status,
    merge_patch,
    promote_plan,
    rollback_plan,
    rollout,
)
from tests.deploy.fake_kube import FakeCustomObjectsApi
from tests.deploy.schemas import validate_resource

NS, NAME, MODEL = "apd", "apd-detector", "apd-detector"
STABLE_URI = "s3://apd-mlflow/1/run-a/artifacts/detector"  # version 1
CANARY_URI = "s3://apd-mlflow/1/run-b/artifacts/detector"  # version 2
SOURCES = {
    "1": STABLE_URI,
    "2": CANARY_URI,
    "3": "mlflow-artifacts:/1/run-c/artifacts/detector",  # the MLflow server proxies artifacts
    "4": "/data/mlflow/artifacts/1/run-d/artifacts/detector",  # a local folder
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow registry (SQLite) holding model versions 1-4 of apd-detector with the SOURCES above."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient()
    client.create_registered_model(MODEL)
    for source in SOURCES.values():
        client.create_model_version(MODEL, source=source)
    yield uri
    mlflow.set_tracking_uri(previous)
    mlflow.set_registry_uri(previous)


def isvc(mode: str | None = "Serverless", **predictor: Any) -> dict[str, Any]:
    """The chart's InferenceService as the API server returns it, steady on model version 1."""
    annotations = {"serving.kserve.io/deploymentMode": mode} if mode else {}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "generation": 1,
            "resourceVersion": "4711",
            "uid": "5b1f4c0e-8d2a-4a51-9d43-0c7f2b5a9e10",
            "creationTimestamp": "2026-11-20T09:00:00Z",
            "annotations": annotations,
        },
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "maxReplicas": 3,
                "serviceAccountName": "apd-predictor",
                "model": {
                    "modelFormat": {"name": "apd-detector"},
                    "runtime": "apd-runtime",
                    "storageUri": STABLE_URI,
                    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
                },
                **predictor,
            }
        },
    }


# A Serverless canary at 10 %, as KServe reports it: revision 00002 (version 2) beside the rolled-out 00001.
CANARY_STATUS: dict[str, Any] = {
    "address": {"url": "http://apd-detector.apd.svc.cluster.local"},
    "url": "http://apd-detector.apd.example.com",
    "deploymentMode": "Serverless",
    "observedGeneration": 2,
    "components": {
        "predictor": {
            "address": {"url": "http://apd-detector-predictor.apd.svc.cluster.local"},
            "url": "http://apd-detector-predictor.apd.example.com",
            "latestCreatedRevision": "apd-detector-predictor-00002",
            "latestReadyRevision": "apd-detector-predictor-00002",
            "latestRolledoutRevision": "apd-detector-predictor-00001",
            "traffic": [
                {
                    "latestRevision": True,
                    "percent": 10,
                    "revisionName": "apd-detector-predictor-00002",
                    "tag": "latest",
                    "url": "http://latest-apd-detector-predictor.apd.example.com",
                },
                {
                    "latestRevision": False,
                    "percent": 90,
                    "revisionName": "apd-detector-predictor-00001",
                    "tag": "prev",
                    "url": "http://prev-apd-detector-predictor.apd.example.com",
                },
            ],
        }
    },
    "conditions": [
        {"lastTransitionTime": "2026-11-21T10:02:11Z", "status": "True", "type": "IngressReady"},
        {"lastTransitionTime": "2026-11-21T10:02:09Z", "status": "True", "type": "LatestDeploymentReady"},
        {"lastTransitionTime": "2026-11-21T10:02:09Z", "status": "True", "type": "PredictorConfigurationReady"},
        {"lastTransitionTime": "2026-11-21T10:02:11Z", "status": "True", "type": "PredictorReady"},
        {"lastTransitionTime": "2026-11-21T10:02:11Z", "status": "True", "type": "PredictorRouteReady"},
        {"lastTransitionTime": "2026-11-21T10:02:11Z", "status": "True", "type": "Ready"},
    ],
    "modelStatus": {
        "copies": {"failedCopies": 0, "totalCopies": 1},
        "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
        "transitionStatus": "UpToDate",
    },
}


def serverless_canary(percent: int = 10) -> dict[str, Any]:
    """A Serverless InferenceService with a canary of version 2 at ``percent``, started by apd rollout."""
    obj = isvc("Serverless", canaryTrafficPercent=percent)
    obj["spec"]["predictor"]["model"]["storageUri"] = CANARY_URI
    obj["metadata"]["annotations"] |= {VERSION_ANNOTATION: "2", STABLE_URI_ANNOTATION: STABLE_URI}
    obj["status"] = copy.deepcopy(CANARY_STATUS)
    return obj


def renamed(obj: dict[str, Any], name: str, namespace: str = NS) -> dict[str, Any]:
    """``obj`` under another name and namespace."""
    obj = copy.deepcopy(obj)
    obj["metadata"] |= {"name": name, "namespace": namespace}
    return obj


def standard_canary(percent: int = 10) -> dict[str, Any]:
    """A Standard InferenceService with canary v2 at ``percent``, as apd rollout writes it."""
    obj = isvc("Standard")
    model = {"name": "kserve-container", **obj["spec"]["predictor"]["model"], "storageUri": CANARY_URI}
    obj["spec"]["canary"] = [{"trafficPercent": percent, "predictor": {"name": "v2", "model": model}}]
    return obj


@pytest.fixture
def cli_env(registry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``apd`` reads the test registry from its settings."""
    monkeypatch.setenv("APD_MLFLOW__TRACKING_URI", registry)
    monkeypatch.setenv("APD_MLFLOW__MODEL_NAME", MODEL)


def run_cli(monkeypatch: pytest.MonkeyPatch, api: FakeCustomObjectsApi, *argv: str) -> int:
    """``apd rollout ...`` against ``api`` (the kubeconfig's default namespace is NS)."""
    monkeypatch.setattr(deploy_module, "kube_api", lambda: (api, NS))
    return main(["rollout", *argv])


def test_fixtures_are_valid_inference_services() -> None:
    for obj in (isvc(), serverless_canary(), standard_canary(), isvc(None)):
        validate_resource(obj)


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 5}}, {"a": 1, "b": {"c": 5, "d": 3}}),  # nested merge
        ({"a": 1, "b": 2}, {"b": None}, {"a": 1}),  # null deletes
        ({"a": 1}, {"b": None}, {"a": 1}),  # deleting what is absent is a no-op
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),  # lists are replaced, not merged
        ({"a": "x"}, {"a": {"b": 1}}, {"a": {"b": 1}}),  # an object replaces a scalar
        ({"a": {"b": 1}}, {"a": {"b": None, "c": None}}, {"a": {}}),  # nulls inside nested objects
    ],
)
def test_merge_patch(target: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]) -> None:
    before = copy.deepcopy(target)
    assert merge_patch(target, patch) == expected
    assert target == before  # pure


@pytest.mark.parametrize(
    ("annotation", "status_mode", "expected"),
    [
        ("Serverless", None, "Serverless"),
        ("Knative", None, "Serverless"),  # KServe >= 0.17's alias
        ("Standard", None, "Standard"),
        ("RawDeployment", None, "Standard"),  # the older name of Standard
        (None, "RawDeployment", "Standard"),  # no annotation: the controller's status says
        (None, None, "Serverless"),  # neither: the configured default
    ],
)
def test_deployment_mode(annotation: str | None, status_mode: str | None, expected: str) -> None:
    obj = isvc(annotation)
    if status_mode:
        obj["status"] = {"deploymentMode": status_mode}
    assert deployment_mode(obj, "Serverless") == expected


def test_model_mesh_is_refused() -> None:
    with pytest.raises(DeployError, match="ModelMesh"):
        deployment_mode(isvc("ModelMesh"), "Serverless")


# ------------------------------------------------------------------------------------------ Serverless patches


def test_serverless_canary_start(registry: str) -> None:
    api = FakeCustomObjectsApi(isvc("Serverless"))
    result = rollout("canary", api, NS, NAME, "Serverless", percent=10, model_name=MODEL, model_version="2")
    assert api.patches == [
        {
            "namespace": NS,
            "name": NAME,
            "body": {
                "metadata": {"annotations": {VERSION_ANNOTATION: "2", STABLE_URI_ANNOTATION: STABLE_URI}},
                "spec": {"predictor": {"canaryTrafficPercent": 10, "model": {"storageUri": CANARY_URI}}},
            },
            "kwargs": {"field_manager": "apd-rollout", "field_validation": "Strict"},
        }
    ]
    validate_resource(api.stored(NS, NAME))
    text = result.text()
    assert f"spec.predictor.model.storageUri: {STABLE_URI} -> {CANARY_URI}" in text
    assert "spec.predictor.canaryTrafficPercent: (absent) -> 10" in text
    assert json.dumps(api.patches[0]["body"], sort_keys=True) in text


@pytest.mark.parametrize(
    ("obj", "percent", "uri", "expected"),
    [
        # raise the running canary's share; the model stays
        (serverless_canary(10), 50, None, {"spec": {"predictor": {"canaryTrafficPercent": 50}}}),
        # --version naming the model the canary already runs: only the share changes
        (serverless_canary(10), 25, CANARY_URI, {"spec": {"predictor": {"canaryTrafficPercent": 25}}}),
        # the same share again: nothing to send
        (serverless_canary(10), 10, None, {}),
        # a new version while a canary runs: the stable model recorded at the start stays recorded
        (
            serverless_canary(10),
            10,
            "s3://apd-mlflow/1/run-e/artifacts/detector",
            {
                "metadata": {"annotations": {VERSION_ANNOTATION: "5"}},
                "spec": {
                    "predictor": {
                        "canaryTrafficPercent": 10,
                        "model": {"storageUri": "s3://apd-mlflow/1/run-e/artifacts/detector"},
                    }
                },
            },
        ),
        # a share of 100 left in spec is no running canary: the new one records what serves now
        (
            isvc("Serverless", canaryTrafficPercent=100),
            10,
            "s3://apd-mlflow/1/run-e/artifacts/detector",
            {
                "metadata": {"annotations": {VERSION_ANNOTATION: "5", STABLE_URI_ANNOTATION: STABLE_URI}},
                "spec": {
                    "predictor": {
                        "canaryTrafficPercent": 10,
                        "model": {"storageUri": "s3://apd-mlflow/1/run-e/artifacts/detector"},
                    }
                },
            },
        ),
    ],
)
def test_serverless_canary_changes(
    obj: dict[str, Any], percent: int, uri: str | None, expected: dict[str, Any]
) -> None:
    plan = canary_plan(obj, percent, uri, "5" if uri and uri != CANARY_URI else None, "Serverless")
    assert plan.patch == expected
    validate_resource(merge_patch(obj, plan.patch))


def test_serverless_promote_removes_the_field() -> None:
    api = FakeCustomObjectsApi(serverless_canary(50))
    result = rollout("promote", api, NS, NAME, "Serverless")
    assert [p["body"] for p in api.patches] == [{"spec": {"predictor": {"canaryTrafficPercent": None}}}]
    stored = api.stored(NS, NAME)
    assert "canaryTrafficPercent" not in stored["spec"]["predictor"]
    assert stored["spec"]["predictor"]["model"]["storageUri"] == CANARY_URI
    validate_resource(stored)
    assert "spec.predictor.canaryTrafficPercent: 50 -> (absent)" in result.text()


def test_serverless_rollback_pins_the_previous_revision_then_restores() -> None:
    api = FakeCustomObjectsApi(serverless_canary(50))
    result = rollout("rollback", api, NS, NAME, "Serverless")
    assert [p["body"] for p in api.patches] == [{"spec": {"predictor": {"canaryTrafficPercent": 0}}}]
    assert "rollback --restore" in result.text()  # the output says how to put the stable model back
    # promoting now would send everything to the model just rolled back from
    with pytest.raises(DeployError, match="rolled back"):
        rollout("promote", api, NS, NAME, "Serverless")
    rollout("rollback", api, NS, NAME, "Serverless", restore=True)
    assert api.patches[-1]["body"] == {"spec": {"predictor": {"model": {"storageUri": STABLE_URI}}}}
    validate_resource(api.stored(NS, NAME))
    rollout("promote", api, NS, NAME, "Serverless")  # the latest revision serves the stable model: safe
    assert api.patches[-1]["body"] == {"spec": {"predictor": {"canaryTrafficPercent": None}}}
    assert api.stored(NS, NAME)["spec"]["predictor"]["model"]["storageUri"] == STABLE_URI


def test_restore_needs_the_recorded_stable_model() -> None:
    obj = serverless_canary(10)
    del obj["metadata"]["annotations"][STABLE_URI_ANNOTATION]  # a canary started with kubectl
    with pytest.raises(DeployError, match="--percent 0"):
        rollback_plan(obj, "Serverless", restore=True)


def test_nothing_to_promote_or_roll_back_without_a_canary() -> None:
    api = FakeCustomObjectsApi(isvc("Serverless"), renamed(isvc("Standard"), "raw"))
    for name in (NAME, "raw"):
        for action in ("promote", "rollback"):
            result = rollout(action, api, NS, name, "Serverless")
            assert not result.sent
            assert "nothing to change" in result.text()
    assert api.patches == []


# ------------------------------------------------------------------------------------------- Standard patches


def test_standard_canary_start(registry: str) -> None:
    api = FakeCustomObjectsApi(isvc("Standard"))
    rollout("canary", api, NS, NAME, "Serverless", percent=10, model_name=MODEL, model_version="2")
    model = {"name": "kserve-container", **isvc()["spec"]["predictor"]["model"], "storageUri": CANARY_URI}
    assert [p["body"] for p in api.patches] == [
        {"spec": {"canary": [{"trafficPercent": 10, "predictor": {"name": "v2", "model": model}}]}}
    ]
    stored = api.stored(NS, NAME)
    assert stored["spec"]["predictor"]["model"]["storageUri"] == STABLE_URI  # the stable predictor is untouched
    assert "annotations" not in api.patches[0]["body"]  # no pod-template change for the stable Deployment
    validate_resource(stored)


def test_standard_raise_promote_rollback() -> None:
    obj = standard_canary(10)
    raised = canary_plan(obj, 50, None, None, "Serverless")
    assert raised.patch == {"spec": {"canary": [{**obj["spec"]["canary"][0], "trafficPercent": 50}]}}
    validate_resource(merge_patch(obj, raised.patch))

    promoted = promote_plan(obj, "Serverless")
    assert promoted.patch == {
        "spec": {"predictor": {"name": "v2", "model": obj["spec"]["canary"][0]["predictor"]["model"]}, "canary": None}
    }
    after = merge_patch(obj, promoted.patch)
    assert after["spec"]["predictor"]["model"]["storageUri"] == CANARY_URI
    assert after["spec"]["predictor"]["minReplicas"] == 1  # the stable predictor keeps its scaling
    assert "canary" not in after["spec"]
    validate_resource(after)

    rolled_back = rollback_plan(obj, "Serverless")
    assert rolled_back.patch == {"spec": {"canary": None}}
    validate_resource(merge_patch(obj, rolled_back.patch))


def test_standard_refuses_several_canaries() -> None:
    obj = standard_canary(10)
    second = {"trafficPercent": 5, "predictor": {"name": "exp", "model": {"storageUri": "s3://x"}}}
    obj["spec"]["canary"].append(second)
    with pytest.raises(DeployError, match="manages one"):
        promote_plan(obj, "Serverless")


@pytest.mark.parametrize(
    ("obj", "percent", "uri", "message"),
    [
        (isvc("Serverless"), 10, None, "no canary is running"),  # --percent alone needs a running canary
        (isvc("Standard"), 10, None, "no canary is running"),
        (isvc("Serverless"), 10, STABLE_URI, "already the model"),  # the version already serving
        (isvc("Standard"), 10, STABLE_URI, "already the stable"),
        (isvc("Serverless"), 101, CANARY_URI, "between 0 and 100"),
        (isvc("Serverless"), -1, CANARY_URI, "between 0 and 100"),
    ],
)
def test_canary_refusals(obj: dict[str, Any], percent: int, uri: str | None, message: str) -> None:
    with pytest.raises(DeployError, match=message):
        canary_plan(obj, percent, uri, "1", "Serverless")


def test_changed_fields_names_annotation_keys() -> None:
    patch = {"metadata": {"annotations": {VERSION_ANNOTATION: "2"}}, "spec": {"predictor": {"canaryTrafficPercent": 5}}}
    changes = {c.path: (c.before, c.after) for c in changed_fields(isvc(), patch)}
    assert changes == {
        f'metadata.annotations["{VERSION_ANNOTATION}"]': (None, "2"),
        "spec.predictor.canaryTrafficPercent": (None, 5),
    }


# ------------------------------------------------------------------------------------------------- status


def test_status_of_a_serverless_canary() -> None:
    text = format_status(serverless_canary(10), "Serverless")
    for line in (
        "InferenceService apd/apd-detector (Serverless mode)",
        "  url: http://apd-detector.apd.example.com",
        "  ready: True",
        f"  spec.predictor.model.storageUri: {CANARY_URI}",
        "  spec.predictor.canaryTrafficPercent: 10",
        "  model version in spec: 2",
        "  predictor:",
        "    url: http://apd-detector-predictor.apd.example.com",
        "    latestRolledoutRevision: apd-detector-predictor-00001",
        "    previousRolledoutRevision: -",
        "    latestCreatedRevision: apd-detector-predictor-00002",
        "      apd-detector-predictor-00002: 10 % tag=latest latestRevision=true",
        "      apd-detector-predictor-00001: 90 % tag=prev latestRevision=false",
    ):
        assert line in text.splitlines(), line


def test_status_shows_failed_readiness_and_standard_canaries() -> None:
    obj = standard_canary(20)
    obj["status"] = {
        "deploymentMode": "Standard",
        "url": "http://apd-detector-apd.example.com",
        "conditions": [
            {"type": "PredictorReady", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "0/1"},
            {"type": "Ready", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "0/1"},
        ],
        "components": {"predictor": {"url": "http://apd-detector-predictor-apd.example.com"}},
        "canaryStatuses": [
            {"name": "v2", "ready": False, "trafficPercent": 20, "modelStatus": {"transitionStatus": "InProgress"}}
        ],
    }
    validate_resource(obj)
    lines = format_status(obj, "Serverless").splitlines()
    assert "  ready: False (MinimumReplicasUnavailable: 0/1)" in lines
    assert f"  spec.canary v2: 20 % -> {CANARY_URI}" in lines
    assert "  canary status v2: ready False, 20 %" in lines
    assert "    traffic: -" in lines


# --------------------------------------------------------------------------------------------- the command


def test_cli_canary_then_status(cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    api = FakeCustomObjectsApi(isvc("Serverless"))
    assert run_cli(monkeypatch, api, "canary", "--version", "2") == 0  # --percent defaults to 10
    assert api.patches[0]["body"]["spec"]["predictor"] == {
        "canaryTrafficPercent": 10,
        "model": {"storageUri": CANARY_URI},
    }
    assert run_cli(monkeypatch, api, "canary", "--percent", "50") == 0
    assert api.patches[1]["body"] == {"spec": {"predictor": {"canaryTrafficPercent": 50}}}
    capsys.readouterr()
    assert run_cli(monkeypatch, api, "status") == 0
    out = capsys.readouterr().out
    assert "spec.predictor.canaryTrafficPercent: 50" in out
    assert f"spec.predictor.model.storageUri: {CANARY_URI}" in out


def test_cli_dry_run_sends_nothing(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    api = FakeCustomObjectsApi(isvc("Serverless"))
    assert run_cli(monkeypatch, api, "canary", "--version", "2", "--percent", "20", "--dry-run") == 0
    assert api.patches == []
    assert api.stored(NS, NAME) == isvc("Serverless")
    out = capsys.readouterr().out
    assert "dry run: patch not sent" in out
    assert '"canaryTrafficPercent": 20' in out


@pytest.mark.parametrize(
    ("argv", "api", "message"),
    [
        # a version the registry does not have
        (("canary", "--version", "9"), FakeCustomObjectsApi(isvc()), "model version 9 of 'apd-detector' not found"),
        # the MLflow server proxies artifacts: KServe cannot download mlflow-artifacts:/
        (("canary", "--version", "3"), FakeCustomObjectsApi(isvc()), "--default-artifact-root s3://"),
        # a local path
        (("canary", "--version", "4"), FakeCustomObjectsApi(isvc()), "cannot read"),
        # no such InferenceService in the namespace
        (
            ("status", "--isvc", "nope"),
            FakeCustomObjectsApi(isvc()),
            "InferenceService nope in namespace apd not found",
        ),
        (("promote", "-n", "other"), FakeCustomObjectsApi(isvc()), "not found"),
        # RBAC denies patching
        (("canary", "--version", "2"), FakeCustomObjectsApi(isvc(), forbidden=("patch",)), "forbidden to patch"),
        # no running canary to raise
        (("canary", "--percent", "30"), FakeCustomObjectsApi(isvc()), "no canary is running"),
        # neither a version nor a share
        (("canary",), FakeCustomObjectsApi(serverless_canary()), "--percent"),
    ],
)
def test_cli_errors_exit_1(
    cli_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    argv: tuple[str, ...],
    api: FakeCustomObjectsApi,
    message: str,
) -> None:
    api = copy.deepcopy(api)  # parametrize builds one instance per case at collection: keep runs independent
    assert run_cli(monkeypatch, api, *argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert api.patches == []


def test_deploy_step(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeCustomObjectsApi(isvc("Serverless"))
    monkeypatch.setattr(deploy_module, "kube_api", lambda: (api, NS))
    step = deploy_module.deploy.python_func
    assert "not rolled out" in step(model_version="2")  # canary_percent defaults to 0: nothing happens
    assert api.gets == 0
    summary = step(model_version="2", canary_percent=20, isvc_name=NAME)
    assert api.patches[0]["body"]["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert f"spec.predictor.model.storageUri: {STABLE_URI} -> {CANARY_URI}" in summary


def test_settings_choose_the_inference_service(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    api = FakeCustomObjectsApi(renamed(isvc("Serverless"), "detector-b", "prod"))
    monkeypatch.setenv("APD_DEPLOY__ISVC_NAME", "detector-b")
    monkeypatch.setenv("APD_DEPLOY__NAMESPACE", "prod")
    assert run_cli(monkeypatch, api, "status") == 0
    assert "InferenceService prod/detector-b" in capsys.readouterr().out
