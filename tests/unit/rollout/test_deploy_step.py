"""components.deploy: the pipeline's deploy step starts a canary through components.rollout."""

import pytest

import components.deploy as deploy_module
import components.rollout as rollout_package
from tests.deploy.fake_kube import FakeCustomObjectsApi
from tests.unit.rollout.objects import CANARY_URI, NAME, NS, STABLE_URI, isvc


def test_deploy_step(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeCustomObjectsApi(isvc("Serverless"))
    monkeypatch.setattr(rollout_package, "kube_api", lambda: (api, NS))
    step = deploy_module.deploy.python_func
    assert "not rolled out" in step(model_version="2")  # canary_percent defaults to 0: nothing happens
    assert api.gets == 0
    summary = step(model_version="2", canary_percent=20, isvc_name=NAME)
    assert api.patches[0]["body"]["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert f"spec.predictor.model.storageUri: {STABLE_URI} -> {CANARY_URI}" in summary
