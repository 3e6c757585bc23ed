"""``apd``'s dispatcher: what a handler raised -> the exit code and the stderr line (one table), and that importing
the CLI (and building its parser) imports none of kserve, kfp or torch."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from components.cli import main
from components.cli.exits import (
    EXITS,
    DatasetRejectedError,
    DriftAlertError,
    PipelineRunError,
    ServerUnavailableError,
    exit_for,
)
from components.common.errors import (
    DataSourceError,
    DeployError,
    DetectorError,
    InvalidImageError,
    InvalidParameterError,
    QualityGateError,
)


@pytest.mark.parametrize(
    ("exc", "code", "prefix"),
    [
        (DriftAlertError("alert"), 3, None),
        (DatasetRejectedError("rejected"), 1, None),
        (ServerUnavailableError("down"), 1, None),
        (PipelineRunError("step failed"), 1, "pipeline failed"),
        (DeployError("no canary"), 1, "error"),  # its own row wins over DetectorError's
        (InvalidParameterError("bad -p"), 2, "error"),
        (DataSourceError("no such folder"), 2, "error"),
        (InvalidImageError("not an image", "not_an_image"), 2, "error"),
        (QualityGateError("below the bar"), 2, "error"),
        (DetectorError("anything else on purpose"), 2, "error"),
    ],
)
def test_the_table_maps_each_error(exc: Exception, code: int, prefix: str | None) -> None:
    end = exit_for(exc)
    assert end is not None
    assert (end.code, end.prefix) == (code, prefix)


@pytest.mark.parametrize("exc", [RuntimeError("bug"), ValueError("bug"), OSError("disk")])
def test_errors_outside_the_table_propagate(exc: Exception) -> None:
    assert exit_for(exc) is None


def test_the_drift_alert_code_is_the_drift_jobs() -> None:
    from components.monitoring.job import ALERT_EXIT_CODE

    assert EXITS[DriftAlertError].code == ALERT_EXIT_CODE


def _raise(exc: Exception) -> Any:
    def fake(*args: object, **kwargs: object) -> Any:
        raise exc

    return fake


def _returns(value: object) -> Any:
    return lambda *args, **kwargs: value


def _fake_report(passed: bool) -> SimpleNamespace:
    return SimpleNamespace(passed=passed, to_markdown=lambda: "the report")


# argv, the function the handler imports lazily, its fake, the exit code, stderr
CASES = [
    (["rollout", "status"], "components.rollout.kube_api", _raise(DeployError("no isvc")), 1, "error: no isvc\n"),
    (
        ["ingest", "nowhere", "--out", "ds"],
        "components.ingest.ingest_dataset",
        _raise(DataSourceError("no such folder: nowhere")),
        2,
        "error: no such folder: nowhere\n",
    ),
    (
        ["predict", "x.png", "--out", "r.csv"],
        "components.batch.run_predict",
        _raise(InvalidParameterError("unknown format")),
        2,
        "error: unknown format\n",
    ),
    (
        ["predict", "x.png", "--out", "r.csv"],
        "components.batch.run_predict",
        _returns(SimpleNamespace(stopped="server unavailable", text=lambda: "summary")),
        1,
        "",
    ),
    (
        ["predict", "x.png", "--out", "r.csv"],
        "components.batch.run_predict",
        _returns(SimpleNamespace(stopped=None, text=lambda: "summary")),
        0,
        "",
    ),
    (["validate", "ds"], "components.validate.validate_dataset", _returns(_fake_report(False)), 1, ""),
    (["validate", "ds"], "components.validate.validate_dataset", _returns(_fake_report(True)), 0, ""),
    (
        ["drift", "run"],
        "components.monitoring.job.run_drift",
        _returns(SimpleNamespace(alert=True, to_text=lambda drift: "verdict: ALERT")),
        3,
        "",
    ),
    (
        ["drift", "run"],
        "components.monitoring.job.run_drift",
        _returns(SimpleNamespace(alert=False, to_text=lambda drift: "verdict: OK")),
        0,
        "",
    ),
    (
        ["drift", "run", "--model-version", "7"],
        "components.monitoring.job.run_drift",
        _raise(InvalidParameterError("registered model 'apd-detector' has no version 7")),
        2,
        "error: registered model 'apd-detector' has no version 7\n",
    ),
    (
        ["pipeline", "run", "--local", "--source", "src"],
        "pipelines.local.run_local",
        _raise(RuntimeError("Task 'train' finished with status FAILURE")),
        1,
        "pipeline failed: Task 'train' finished with status FAILURE\n",
    ),
]


@pytest.mark.parametrize(
    ("argv", "target", "fake", "code", "err"), CASES, ids=[f"{' '.join(case[0])} -> {case[3]}" for case in CASES]
)
def test_main_maps_what_the_handler_raised(
    argv: list[str],
    target: str,
    fake: Any,
    code: int,
    err: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(target, fake)
    monkeypatch.setattr("components.validate.write_report", _returns(None))
    assert main(argv) == code
    assert capsys.readouterr().err == err


def test_other_errors_propagate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("components.batch.run_predict", _raise(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        main(["predict", "x.png", "--out", "r.csv"])


def test_importing_the_cli_imports_no_heavy_package() -> None:
    """``apd --help`` stays fast: the handlers import kserve, kfp and torch (through their areas) when they run."""
    code = (
        "import sys; import components.cli; components.cli.build_parser(); "
        "print(sorted({'kserve', 'kfp', 'torch'} & {name.split('.')[0] for name in sys.modules}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_python_m_components_cli() -> None:
    """``python -m components.cli`` (the tests, the chart and the incident drill run it) is ``apd``."""
    done = subprocess.run(
        [sys.executable, "-m", "components.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "{serve,explain,sink,ui,auth,data,ingest,validate,pipeline,rollout,drift,predict}" in done.stdout
