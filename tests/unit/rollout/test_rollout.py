"""components.rollout.rollout: read, plan and send against a fake Kubernetes API (FakeCustomObjectsApi, because
no API server can run here), with model versions from a real MLflow registry.
"""

import json

import pytest

from components.common.errors import DeployError
from components.rollout import rollout
from components.rollout.plans import STABLE_URI_ANNOTATION, VERSION_ANNOTATION
from tests.deploy.fake_kube import FakeCustomObjectsApi
from tests.deploy.schemas import validate_resource
from tests.unit.rollout.objects import (
    CANARY_URI,
    MODEL,
    NAME,
    NS,
    STABLE_URI,
    explainer_uri,
    isvc,
    renamed,
    serverless_canary,
    with_explainer,
)


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


def test_nothing_to_promote_or_roll_back_without_a_canary() -> None:
    api = FakeCustomObjectsApi(isvc("Serverless"), renamed(isvc("Standard"), "raw"))
    for name in (NAME, "raw"):
        for action in ("promote", "rollback"):
            result = rollout(action, api, NS, name, "Serverless")
            assert not result.sent
            assert "nothing to change" in result.text()
    assert api.patches == []


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


def test_serverless_canary_moves_the_explainer(registry: str) -> None:
    """The chart's explainer follows the predictor; the output names its model, not its whole container."""
    api = FakeCustomObjectsApi(with_explainer(isvc("Serverless")))
    result = rollout("canary", api, NS, NAME, "Serverless", percent=10, model_name=MODEL, model_version="2")
    stored = api.stored(NS, NAME)
    validate_resource(stored)
    assert (stored["spec"]["explainer"]["canaryTrafficPercent"], explainer_uri(stored)) == (10, CANARY_URI)
    text = result.text()
    assert f"spec.explainer.containers: STORAGE_URI={STABLE_URI} -> STORAGE_URI={CANARY_URI}" in text
    assert "spec.explainer.canaryTrafficPercent: (absent) -> 10" in text
