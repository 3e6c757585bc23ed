"""The decorator that turns a thin wrapper function into a pipeline stage (a KFP lightweight component).

Every stage runs in the project's one component image, with the project installed, so its body imports the
project's core function and calls it: the same definition runs under ``kfp.local`` (project installed in the
venv) and on a Kubeflow cluster. The decorator is imported from its own module rather than ``kfp.dsl``,
because inside a running step KFP's executor sets ``_KFP_RUNTIME=true`` and ``kfp.dsl`` then no longer exports
``component``, while the step's body imports the stage module to reach the core function.
"""

from collections.abc import Callable
from typing import Any

from kfp.dsl.component_decorator import component
from kfp.dsl.python_component import PythonComponent

# The container image every pipeline step runs in on a cluster; the local runner ignores it.
COMPONENT_IMAGE = "apd-components:0.1.0"


def stage(func: Callable[..., Any]) -> PythonComponent:
    """``@stage`` = ``@dsl.component`` in the component image, without installing kfp or packages at start."""
    return component(func, base_image=COMPONENT_IMAGE, install_kfp_package=False)
