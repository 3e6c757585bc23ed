"""components.rollout.plans: the exact merge patches per command and deployment mode, that the patched
InferenceService still passes KServe's CRD schema, and the refusals.
"""

from typing import Any

import pytest

from components.common.errors import DeployError
from components.rollout.patch import merge_patch
from components.rollout.plans import (
    STABLE_URI_ANNOTATION,
    VERSION_ANNOTATION,
    canary_plan,
    deployment_mode,
    promote_plan,
    rollback_plan,
)
from tests.deploy.schemas import validate_resource
from tests.unit.rollout.objects import (
    CANARY_URI,
    STABLE_URI,
    explainer_uri,
    isvc,
    serverless_canary,
    standard_canary,
    with_explainer,
)


def test_fixtures_are_valid_inference_services() -> None:
    for obj in (isvc(), serverless_canary(), standard_canary(), isvc(None), with_explainer(serverless_canary())):
        validate_resource(obj)


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


def test_restore_needs_the_recorded_stable_model() -> None:
    obj = serverless_canary(10)
    del obj["metadata"]["annotations"][STABLE_URI_ANNOTATION]  # a canary started with kubectl
    with pytest.raises(DeployError, match="--percent 0"):
        rollback_plan(obj, "Serverless", restore=True)


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


# ------------------------------------------------------------------------------------------------- the explainer


def _applied(obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    after = merge_patch(obj, patch)
    validate_resource(after)
    return after


def test_serverless_explainer_follows_canary_promote_and_rollback() -> None:
    """A Serverless canary moves the explainer with the predictor: explanations come from the model that answered."""
    start = canary_plan(with_explainer(isvc("Serverless")), 10, CANARY_URI, "2", "Serverless")
    explainer = start.patch["spec"]["explainer"]
    assert explainer["canaryTrafficPercent"] == 10
    [container] = explainer["containers"]  # the whole list (a merge patch replaces lists): args and env kept
    assert container["args"][0] == "explain"
    assert container["env"][1] == {"name": "OMP_NUM_THREADS", "value": "2"}
    running = _applied(with_explainer(isvc("Serverless")), start.patch)
    assert explainer_uri(running) == CANARY_URI

    # a new share only: the explainer's share changes, its model stays
    raised = canary_plan(running, 50, None, None, "Serverless")
    assert raised.patch["spec"]["explainer"] == {"canaryTrafficPercent": 50}

    promoted = _applied(running, promote_plan(running, "Serverless").patch)
    assert "canaryTrafficPercent" not in promoted["spec"]["explainer"]
    assert explainer_uri(promoted) == CANARY_URI

    rolled_back = rollback_plan(running, "Serverless")
    assert rolled_back.patch["spec"]["explainer"] == {"canaryTrafficPercent": 0}
    restored = _applied(running, rollback_plan(running, "Serverless", restore=True).patch)
    assert (restored["spec"]["explainer"]["canaryTrafficPercent"], explainer_uri(restored)) == (0, STABLE_URI)


def test_standard_explainer_stays_stable_until_promote() -> None:
    """spec.canary entries hold a predictor only: the explainer keeps the stable model, then gets the promoted one."""
    obj = with_explainer(isvc("Standard"))
    started = canary_plan(obj, 10, CANARY_URI, "2", "Serverless")
    assert "explainer" not in started.patch["spec"]
    running = _applied(obj, started.patch)
    assert explainer_uri(running) == STABLE_URI
    promoted = promote_plan(running, "Serverless")
    assert set(promoted.patch["spec"]["explainer"]) == {"containers"}  # no canaryTrafficPercent in Standard mode
    assert explainer_uri(_applied(running, promoted.patch)) == CANARY_URI
    assert "explainer" not in rollback_plan(running, "Serverless").patch["spec"]


def test_no_explainer_no_explainer_patch() -> None:
    """Without spec.explainer (explainer.enabled=false) the plans are the predictor's alone."""
    plan = canary_plan(isvc("Serverless"), 10, CANARY_URI, "2", "Serverless")
    assert set(plan.patch["spec"]) == {"predictor"}
