"""How batch prediction fails: ``PredictError`` stops the run; ``TransientError`` (a connection error, a 5xx, a
server not ready, a failed fetch) is retried with ``Retry``'s bounded backoff by ``with_retries``."""

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from components.common.errors import DetectorError

log = structlog.get_logger(__name__)

T = TypeVar("T")


class PredictError(DetectorError):
    """Batch prediction cannot go on: wrong URL, protocol or model name, an output that is not ours."""


class TransientError(DetectorError):
    """A failure worth retrying. ``unavailable``: the server is unreachable or not ready (as opposed to a 5xx for
    this request), which stops the run when it lasts."""

    def __init__(self, message: str, unavailable: bool) -> None:
        super().__init__(message)
        self.unavailable = unavailable


@dataclass(frozen=True)
class Retry:
    """Bounded retries with exponential backoff (and jitter, so that concurrent requests do not retry in step)."""

    attempts: int = 5  # tries in all, the first included
    backoff_seconds: float = 0.5  # wait before the second try; doubles each time
    max_backoff_seconds: float = 8.0  # longest wait between tries

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        base = min(self.max_backoff_seconds, self.backoff_seconds * 2.0 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not security)


def with_retries(call: Callable[[], T], retry: Retry, what: str, sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, retried on TransientError up to ``retry.attempts`` tries; each retry is logged."""
    for attempt in range(1, retry.attempts + 1):
        try:
            return call()
        except TransientError as exc:
            if attempt == retry.attempts:
                raise
            wait_seconds = retry.delay(attempt)
            log.warning(
                "predict_retry", what=what, attempt=attempt, wait_seconds=round(wait_seconds, 2), error=str(exc)
            )
            sleep(wait_seconds)
    raise AssertionError("unreachable")  # pragma: no cover
