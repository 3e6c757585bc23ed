"""Run a pipeline on this machine with KFP's local runner (each step a subprocess of this venv)."""

import logging
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kfp.local
import structlog

log = structlog.get_logger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status")


@dataclass
class StageTimes(logging.Filter):
    """Wall time of each task, read from the local runner's own 'Executing task' / 'finished' log records.

    A filter on the root logger, not a handler: the runner swaps the root logger's handlers while it runs.
    """

    seconds: dict[str, float] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)

    def filter(self, record: logging.LogRecord) -> bool:
        message = _ANSI.sub("", record.getMessage())
        if started := _STARTED.search(message):
            self._started[started[1]] = record.created
        elif (finished := _FINISHED.search(message)) and finished[1] in self._started:
            self.seconds[finished[1]] = record.created - self._started[finished[1]]
        return True


def run_local(
    pipeline: Callable[..., Any], pipeline_root: Path, times: StageTimes | None = None, **arguments: Any
) -> Any:
    """Run ``pipeline`` with ``arguments`` under ``kfp.local``; outputs land in ``pipeline_root/<run>/<task>/``.
    With ``times``, each task's wall time is recorded in ``times.seconds``.

    Raises:
        RuntimeError: a step failed (KFP's own error; the step's log above names the cause).
    """
    pipeline_root.mkdir(parents=True, exist_ok=True)
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root.resolve()))
    started = time.perf_counter()
    root = logging.getLogger()
    if times is not None:
        root.addFilter(times)
    try:
        with warnings.catch_warnings():
            # The steps' base image is the project's own; here the project is installed in this venv instead.
            warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*", category=RuntimeWarning)
            # Cluster resources (GPU, memory) of the train step mean nothing on one machine.
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*", category=UserWarning)
            outputs = pipeline(**arguments)
    finally:
        if times is not None:
            root.removeFilter(times)
    log.info("pipeline_done", pipeline=getattr(pipeline, "name", "?"), seconds=round(time.perf_counter() - started, 1))
    return outputs
