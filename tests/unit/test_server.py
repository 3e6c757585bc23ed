"""``apd serve``: the predictor process imports no training stack (the apd-serving image holds none of it)."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

TRAINING_STACK = {"torch", "torchvision", "timm", "kfp", "mlflow", "evidently", "sklearn", "matplotlib", "onnx"}


def test_the_predictor_and_the_page_import_no_training_stack() -> None:
    """What ``apd serve`` and ``apd ui`` import (the CLI, the server, the KServe model, the page) must run in the
    lean predictor image: no torch, no MLflow (registry URIs import it when used), no training libraries."""
    code = (
        "import sys; import components.cli.dispatch, serving.server, serving.detector, serving.ui; "
        "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert TRAINING_STACK.isdisjoint(done.stdout.split()), TRAINING_STACK & set(done.stdout.split())


def test_the_predictor_dependencies_are_project_dependencies() -> None:
    """The predictor image installs the [project] dependencies that [tool.apd] names: a name that matches none
    would silently leave a package out of the image."""
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    names = {re.split(r"[\[=<>!~; ]", spec)[0] for spec in project["project"]["dependencies"]}
    predictor = project["tool"]["apd"]["predictor-dependencies"]
    assert set(predictor) <= names, set(predictor) - names
    assert "torch" not in predictor
