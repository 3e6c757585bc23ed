"""KServe's DataPlane, with v2 binary-data extension BYTES inputs kept as raw bytes.

KServe 0.21 parses a binary-extension request (``Inference-Header-Content-Length``) in ``InferRequest.from_bytes``
and turns every BYTES element into a UTF-8 string on the way, so a raw JPEG fails inside KServe with HTTP 500
("Failed to encode ... using UTF-8") before any model code runs. This data plane parses such requests itself:
BYTES inputs become lists of ``bytes``, numeric inputs are decoded as KServe decodes them, and a malformed
request is a 400. Everything else is KServe's own code path.

With API keys on (``APD_AUTH__ENABLED``), the data plane also carries the settings into every REST worker: KServe
builds its FastAPI app (``kserve.model_server:app``) in each process that serves REST, the main one or each of
``--workers N`` (spawned, the data plane unpickled there first), and the data plane installs ``serving.auth``'s
middleware on that process's app, with one Guard per process (``guard``, which the gRPC server shares).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
from kserve import model_server
from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import (
    InferInput,
    InferRequest,
    RequestedOutput,
    deserialize_bytes_tensor,
)
from kserve.utils.numpy_codec import to_np_dtype

from components.common.settings import AuthSettings
from serving.auth import ApiKeyMiddleware, Guard, model_server_needs_key


def parse_binary_request(body: bytes, json_length: int, model_name: str) -> InferRequest:
    """A v2 REST request with the binary-data extension -> InferRequest (BYTES inputs as lists of bytes)."""
    if not 0 < json_length <= len(body):
        raise InvalidInput(f"{INFERENCE_CONTENT_LENGTH_HEADER} is {json_length}; the body has {len(body)} bytes")
    try:
        header: dict[str, Any] = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the JSON header of the binary request is malformed: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput('the JSON header must be an object with an "inputs" list')
    offset, inputs = json_length, []
    for spec in header["inputs"]:
        try:
            name, shape, datatype = spec["name"], spec["shape"], str(spec["datatype"]).upper()
        except (KeyError, TypeError) as exc:
            raise InvalidInput(f"each input needs name, shape and datatype; got {spec!r}") from exc
        parameters = spec.get("parameters") or {}
        if "data" in spec:
            inputs.append(InferInput(name, shape, datatype, spec["data"], parameters))
            continue
        size = parameters.get("binary_data_size")
        if not isinstance(size, int) or offset + size > len(body):
            raise InvalidInput(f"input {name!r}: binary_data_size {size!r} does not fit the {len(body)}-byte body")
        raw = body[offset : offset + size]
        offset += size
        try:
            if datatype == "BYTES":
                data: list[Any] = [bytes(v) for v in deserialize_bytes_tensor(raw)]
            else:
                data = np.frombuffer(raw, dtype=to_np_dtype(datatype)).tolist()
        except (struct.error, ValueError, TypeError) as exc:
            raise InvalidInput(
                f"input {name!r}: its {size} bytes are not a {datatype} tensor (a BYTES element is a 4-byte "
                f"little-endian length, then that many bytes): {exc}"
            ) from exc
        params = {k: v for k, v in parameters.items() if k != "binary_data_size"}
        inputs.append(InferInput(name, shape, datatype, data, params or None))
    outputs = [RequestedOutput(o["name"], o.get("parameters")) for o in header.get("outputs") or []]
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=header.get("id"),
        parameters=header.get("parameters"),
        request_outputs=outputs or None,
    )


class BinaryBytesDataPlane(DataPlane):
    """DataPlane whose binary-extension requests keep BYTES raw, and that guards the REST app of every process it is
    in when API keys are on (see the module docstring)."""

    def __init__(self, model_registry: Any, auth: AuthSettings | None = None) -> None:
        super().__init__(model_registry=model_registry)
        self.auth = auth
        self.guard = self._guard_rest_app()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "guard": None}  # each process its own Guard (a lock, its own buckets)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.guard = self._guard_rest_app()

    def _guard_rest_app(self) -> Guard | None:
        """With keys on: this process's Guard, its middleware installed on KServe's app (before the app starts)."""
        if self.auth is None or not self.auth.enabled:
            return None
        guard = Guard(self.auth)
        model_server.app.add_middleware(ApiKeyMiddleware, guard=guard, needs_key=model_server_needs_key)
        return guard

    def decode_inference_request(self, body: Any, headers: dict[str, str], model_name: str) -> InferRequest:
        if isinstance(body, bytes) and INFERENCE_CONTENT_LENGTH_HEADER in headers:
            return parse_binary_request(body, int(headers[INFERENCE_CONTENT_LENGTH_HEADER]), model_name)
        return super().decode_inference_request(body, headers, model_name)
