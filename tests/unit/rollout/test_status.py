"""components.rollout.status: the rollout state as text."""

from components.rollout.status import format_status
from tests.deploy.schemas import validate_resource
from tests.unit.rollout.objects import CANARY_URI, serverless_canary, standard_canary, with_explainer


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


def test_status_names_the_explainers_model_and_share() -> None:
    lines = format_status(with_explainer(serverless_canary(10)), "Serverless").splitlines()
    assert f"  spec.explainer STORAGE_URI: {CANARY_URI}" in lines
    assert "  spec.explainer.canaryTrafficPercent: 10" in lines
