"""Run a pipeline on this machine with KFP's local runner (each step a subprocess of this venv)."""

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kfp.local
import structlog

log = structlog.get_logger(__name__)


def run_local(pipeline: Callable[..., Any], pipeline_root: Path, **arguments: Any) -> Any:
    """Run ``pipeline`` with ``arguments`` under ``kfp.local``; outputs land in ``pipeline_root/<run>/<task>/``.

    Raises:
        RuntimeError: a step failed (KFP's own error; the step's log above names the cause).
    """
    pipeline_root.mkdir(parents=True, exist_ok=True)
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root.resolve()))
    started = time.perf_counter()
    with warnings.catch_warnings():
        # The steps' base image is the project's own; here the project is installed in this venv instead.
        warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*", category=RuntimeWarning)
        # Cluster resources (GPU, memory) of the train step mean nothing on one machine.
        warnings.filterwarnings(
            "ignore", message=".*have no effect in the current local runner.*", category=UserWarning
        )
        outputs = pipeline(**arguments)
    log.info("pipeline_done", pipeline=getattr(pipeline, "name", "?"), seconds=round(time.perf_counter() - started, 1))
    return outputs
