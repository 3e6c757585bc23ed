"""The served model over KServe's v2 protocol (tritonclient: REST with the binary-data extension, or gRPC): what
its failures mean for the run, readiness, and one request with the re-sending of a rejected batch image by image."""

import importlib
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.client import HTTPException
from types import ModuleType
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import structlog

from components.batch.failures import PredictError, Retry, TransientError, with_retries
from components.common import protocol
from components.common.errors import DetectorError, InvalidParameterError
from components.common.protocol import Answer

log = structlog.get_logger(__name__)

T = TypeVar("T")


class ServingUnavailableError(PredictError):
    """The server stayed unreachable or not ready through every retry; the rows written so far are kept."""


class RejectedError(DetectorError):
    """The server refused a request's input (HTTP 400, gRPC INVALID_ARGUMENT or a message over its size limit)."""


class Scorer(Protocol):
    """The served model: raises RejectedError (bad input), TransientError (retry) or PredictError (stop)."""

    def ready(self) -> bool: ...

    def score(self, images: Sequence[bytes]) -> list[Answer]: ...


def classify_failure(status: str, message: str) -> Exception:
    """A tritonclient error (HTTP status code, or gRPC ``StatusCode.X``) -> what batch prediction does with it."""
    code = status.removeprefix("StatusCode.")
    if code in ("400", "413", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "OUT_OF_RANGE"):
        return RejectedError(message)
    if code in ("503", "502", "504", "UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return TransientError(f"server unavailable ({code}): {message}", unavailable=True)
    if (code.isdigit() and int(code) >= 500) or code in ("INTERNAL", "UNKNOWN", "ABORTED"):
        return TransientError(f"server error {code}: {message}", unavailable=False)
    return PredictError(f"the server answered {code}: {message}")


def parse_address(url: str, protocol: str) -> tuple[str, bool]:
    """``http(s)://host:port`` (REST) or ``[grpc(s)://]host:port`` (gRPC) -> (``host:port``, TLS)."""
    schemes = {"rest": {"http": False, "https": True}, "grpc": {"grpc": False, "grpcs": True, "": False}}[protocol]
    parts = urlsplit(url if "://" in url else f"//{url}")
    if parts.scheme not in schemes or not parts.netloc or parts.path not in ("", "/") or parts.query:
        expected = "http(s)://host:port" if protocol == "rest" else "host:port or grpc(s)://host:port"
        raise InvalidParameterError(f"bad {protocol} URL {url!r}; expected {expected}")
    return parts.netloc, schemes[parts.scheme]


class TritonScorer:
    """The served model through tritonclient (``rest``: tritonclient.http, raw bytes with the binary-data
    extension; ``grpc``: tritonclient.grpc). One client per thread."""

    def __init__(self, url: str, model: str, protocol: str = "rest", timeout: float = 60.0) -> None:
        if protocol not in ("rest", "grpc"):
            raise InvalidParameterError(f"unknown protocol {protocol!r}; use rest or grpc")
        if protocol == "grpc" and "kserve" in sys.modules:
            # Both register the same protobuf symbols: importing tritonclient.grpc next to kserve fails.
            raise PredictError("tritonclient.grpc cannot run in a process that imported kserve; run apd predict alone")
        self.address, self.ssl = parse_address(url, protocol)
        self.url, self.model, self.protocol, self.timeout = url, model, protocol, timeout
        self.module: ModuleType = importlib.import_module(f"tritonclient.{'grpc' if protocol == 'grpc' else 'http'}")
        # gRPC calls take a deadline each; REST clients get their timeouts when they are made
        self.deadline: dict[str, float] = {"client_timeout": timeout} if protocol == "grpc" else {}
        self._local = threading.local()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self.module.InferenceServerClient(self.address, ssl=self.ssl)
            else:
                client = self.module.InferenceServerClient(
                    self.address, ssl=self.ssl, connection_timeout=self.timeout, network_timeout=self.timeout
                )
            self._local.client = client
        return client

    def _call(self, call: Callable[[Any], T]) -> T:
        from tritonclient.utils import InferenceServerException

        try:
            return call(self._client())
        except InferenceServerException as exc:
            failure = classify_failure(str(exc.status()), str(exc.message()))
        except (OSError, HTTPException) as exc:  # REST: refused, reset, timed out, closed mid-answer
            failure = TransientError(f"cannot reach {self.url}: {exc}", unavailable=True)
        if isinstance(failure, TransientError):
            self._local.client = None  # a fresh connection for the next try
        raise failure

    def ready(self) -> bool:
        return bool(self._call(lambda c: c.is_model_ready(self.model, **self.deadline)))

    def score(self, images: Sequence[bytes]) -> list[Answer]:
        import numpy as np

        tc = self.module
        tensor = tc.InferInput(protocol.INPUT_NAME, [len(images)], protocol.INPUT_DATATYPE)
        tensor.set_data_from_numpy(np.array(list(images), dtype=np.object_))  # raw bytes, never base64
        outputs = [tc.InferRequestedOutput(name) for name in protocol.OUTPUT_NAMES]
        result = self._call(
            lambda c: c.infer(self.model, [tensor], outputs=outputs, request_id="apd-predict", **self.deadline)
        )
        response = result.get_response()
        version = str(response["model_version"] if isinstance(response, dict) else response.model_version)
        arrays = {name: result.as_numpy(name) for name in protocol.OUTPUT_NAMES}  # None: not sent (an older server)
        columns = {name: array.tolist() for name, array in arrays.items() if array is not None}
        if any(len(columns.get(name, ())) != len(images) for name in protocol.REQUIRED_OUTPUTS):
            raise PredictError(f"the server answered {len(images)} images with outputs of other lengths")
        columns["probability"] = [round(float(p), 6) for p in columns["probability"]]
        return protocol.read_v2(columns, version, _parameters(response))


def _parameters(response: Any) -> dict[str, Any]:
    """The response parameters as plain values: tritonclient.http gives JSON, tritonclient.grpc InferParameter
    messages (one of bool_param, int64_param, string_param, ...)."""
    if isinstance(response, dict):
        parameters = response.get("parameters")
        return parameters if isinstance(parameters, dict) else {}
    choices = {name: (value, value.WhichOneof("parameter_choice")) for name, value in response.parameters.items()}
    return {name: getattr(value, choice) for name, (value, choice) in choices.items() if choice}


def wait_until_ready(scorer: Scorer, retry: Retry, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return when the model is ready; raise ServingUnavailableError when it is not after ``retry``'s tries."""

    def check() -> None:
        if not scorer.ready():
            raise TransientError("the model is not ready", unavailable=True)

    try:
        with_retries(check, retry, "ready", sleep)
    except TransientError as exc:
        raise ServingUnavailableError(str(exc)) from exc


def score_images(
    scorer: Scorer, images: Sequence[bytes], retry: Retry, sleep: Callable[[float], None] = time.sleep
) -> list[Answer | str]:
    """One request for ``images``; per image an Answer or the error message. A request the server rejects (or
    keeps failing with a 5xx) is re-sent one image per request, so that only the bad image gets the error."""
    try:
        return list(with_retries(lambda: scorer.score(images), retry, "infer", sleep))
    except RejectedError as exc:
        failure = str(exc)
    except TransientError as exc:
        if exc.unavailable:
            raise ServingUnavailableError(f"{exc}; re-run the same command to resume") from exc
        failure = str(exc)
    if len(images) == 1:
        return [failure]
    log.info("predict_batch_split", images=len(images), error=failure)
    return [answer for image in images for answer in score_images(scorer, [image], retry, sleep)]
