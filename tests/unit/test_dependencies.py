"""Every third-party module the code imports comes from a distribution that pyproject.toml declares: the runtime
code's from ``[project] dependencies``, the tests' and tools' also from the ``dev`` extra. A module that only
arrives as somebody else's dependency breaks the day that somebody drops it."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"components", "pipelines", "serving", "tests", "panels"}  # panels: helm/panels.py, beside its script
RUNTIME_TREES = ("components", "pipelines", "serving")
DEV_TREES = ("tests", "helm", "manifests")
# Run only from a development install (`make incident` after `make demo`), never in an image (path prefixes).
DEV_ONLY = ("pipelines/incident/",)


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    dev = {_name(r) for r in project["optional-dependencies"]["dev"]}
    return runtime, runtime | dev


def _imports(trees: tuple[str, ...], skip: tuple[str, ...]) -> dict[str, set[str]]:
    """Top-level module name -> files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for tree in trees:
        for path in sorted((REPO / tree).rglob("*.py")):
            if str(path.relative_to(REPO)).startswith(skip):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                        found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _undeclared(trees: tuple[str, ...], declared: set[str], skip: tuple[str, ...]) -> list[str]:
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module, files in sorted(_imports(trees, skip).items()):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        if not names & declared:
            missing.append(f"{module} (from {sorted(names) or 'no installed distribution'}) in {sorted(files)[:3]}")
    return missing


@pytest.mark.parametrize("scope", ["runtime", "dev"])
def test_every_import_is_declared(scope: str) -> None:
    runtime, dev = _declared()
    if scope == "runtime":
        missing = _undeclared(RUNTIME_TREES, runtime, skip=DEV_ONLY)
    else:
        missing = _undeclared(RUNTIME_TREES + DEV_TREES, dev, skip=())
    assert not missing, "declare these in pyproject.toml:\n" + "\n".join(missing)
