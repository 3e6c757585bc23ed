"""apd rollout: output, dry runs, errors (exit 1) and the settings that choose the InferenceService."""

import copy

import pytest

import components.rollout as rollout_package
from components.cli import main
from tests.deploy.fake_kube import FakeCustomObjectsApi
from tests.unit.rollout.objects import CANARY_URI, NAME, NS, isvc, renamed, serverless_canary


def run_cli(monkeypatch: pytest.MonkeyPatch, api: FakeCustomObjectsApi, *argv: str) -> int:
    """``apd rollout ...`` against ``api`` (the kubeconfig's default namespace is NS)."""
    monkeypatch.setattr(rollout_package, "kube_api", lambda: (api, NS))
    return main(["rollout", *argv])


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


def test_settings_choose_the_inference_service(
    cli_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    api = FakeCustomObjectsApi(renamed(isvc("Serverless"), "detector-b", "prod"))
    monkeypatch.setenv("APD_DEPLOY__ISVC_NAME", "detector-b")
    monkeypatch.setenv("APD_DEPLOY__NAMESPACE", "prod")
    assert run_cli(monkeypatch, api, "status") == 0
    assert "InferenceService prod/detector-b" in capsys.readouterr().out
