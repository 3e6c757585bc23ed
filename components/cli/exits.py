"""How ``apd`` ends: one table from what a command raised to its exit code and what goes to stderr.

A handler returns nothing when its command succeeded (exit 0) and raises otherwise: a domain error
(``DetectorError`` and its subclasses) or a ``VerdictError``: a command that ran to its end with a negative
answer, its report already on stdout. The dispatcher catches once and looks the exception up in ``EXITS``: the
first class of its MRO in the table wins, so a subclass's row overrides its base's (``DeployError`` exits 1,
other ``DetectorError``s 2). Anything else propagates: a traceback and exit 1; Ctrl-C, Python's own handling.
"""

import sys
from dataclasses import dataclass

from components.common.errors import DeployError, DetectorError


class VerdictError(Exception):
    """A command that ran to its end with a negative answer; its report is already on stdout."""


class DatasetRejectedError(VerdictError):
    """``apd validate``: the dataset failed a rule (the report lists each)."""


class ServerUnavailableError(VerdictError):
    """``apd predict``: the model server stayed unavailable; the run stopped and kept the rows it wrote."""


class DriftAlertError(VerdictError):
    """``apd drift run``: the drift alert fired."""


class PipelineRunError(DetectorError):
    """``apd pipeline run``: a step failed under KFP's local runner; the step's own log above names the cause."""


@dataclass(frozen=True)
class Exit:
    """An exit code, and the prefix of the stderr line ``"{prefix}: {exception}"`` (None: no line)."""

    code: int
    prefix: str | None


EXITS: dict[type[Exception], Exit] = {
    DriftAlertError: Exit(3, None),  # components.monitoring.job.ALERT_EXIT_CODE (a test checks they agree)
    DatasetRejectedError: Exit(1, None),
    ServerUnavailableError: Exit(1, None),
    PipelineRunError: Exit(1, "pipeline failed"),
    DeployError: Exit(1, "error"),
    DetectorError: Exit(2, "error"),  # InvalidParameterError, DataSourceError, InvalidImageError, ...
}


def exit_for(exc: Exception) -> Exit | None:
    """The row of the first class of ``type(exc)``'s MRO in ``EXITS``; None when the table has none."""
    return next((EXITS[cls] for cls in type(exc).__mro__ if cls in EXITS), None)


def report(exc: Exception, end: Exit) -> int:
    """Write ``end``'s stderr line for ``exc`` (if it has one) and return its exit code."""
    if end.prefix is not None:
        print(f"{end.prefix}: {exc}", file=sys.stderr)
    return end.code
