"""Domain errors. Each carries a message a user can act on: what was wrong and what is accepted."""

from __future__ import annotations


class DetectorError(Exception):
    """Base class of every error the platform raises on purpose."""


class InvalidImageError(DetectorError):
    """An image that cannot be accepted: not an image, corrupt, wrong format or over a limit.

    ``reason`` is a short machine-readable code (``too_large``, ``unsupported_format`` ...) used for metrics.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DataSourceError(DetectorError):
    """A dataset source that cannot be read: missing folder, unknown layout, bad URI or Parquet columns."""


class DataValidationError(DetectorError):
    """A dataset that failed validation; the message lists each failed rule and the files it names."""


class QualityGateError(DetectorError):
    """A trained model below a quality bar; the message names each metric, its value and the bar."""


class InvalidParameterError(DetectorError, ValueError):
    """A command-line or run parameter that names nothing known or has the wrong type."""


class InvalidRequestError(DetectorError):
    """An inference request of the wrong shape: malformed body, bad base64, wrong datatype, empty or oversized batch."""


class DeployError(DetectorError):
    """A rollout that cannot be done: unknown model version, a source KServe cannot read, missing or forbidden
    InferenceService, or a canary state the command does not apply to. The message says what to do instead."""


class TrainingJobError(DetectorError):
    """A distributed training job (Kubeflow TrainJob or PyTorchJob) that cannot be created, failed or ran out of
    time; the message names the job, its condition and the last lines of rank 0's log, or what to install or grant."""


class KeyFileError(DetectorError, ValueError):
    """An API keys file (or key line) that cannot be used; the message names the file and the line, never a line's
    content (it might be a key written where its hash belongs)."""
