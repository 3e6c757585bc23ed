"""Protocol codec: KServe v1 / v2 (Open Inference Protocol) requests <-> image bytes and answers, on KServe's types.

The contract itself (names, datatypes, the answer's fields and values) is ``components.common.protocol``; this
module validates requests against it and wraps answers into KServe's ``InferResponse``. Pure functions, no model
inside. Every malformed request raises ``InvalidRequestError`` with a message that says what was wrong and what is
accepted; the model server turns it into HTTP 400 / gRPC INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import struct
import uuid
from typing import Any

import numpy as np
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from components.common import protocol
from components.common.errors import InvalidRequestError
from components.common.protocol import Answer

V1_FORMAT = protocol.v1_request_example("<base64 JPEG, PNG or WebP>")


def _check_batch(count: int, max_batch: int) -> None:
    if count == 0:
        raise InvalidRequestError("the batch is empty; send at least one image")
    if count > max_batch:
        raise InvalidRequestError(f"the batch holds {count} images; at most {max_batch} per request are accepted")


def _b64decode(text: object, where: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidRequestError(f"{where}: expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(f"{where}: invalid base64 ({exc})") from exc


def images_from_v1(body: object, max_batch: int) -> list[bytes]:
    """``{"instances": [{"image": {"b64": ...}}]}`` (``image_bytes`` is accepted as TF-Serving names it)."""
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise InvalidRequestError(f"expected a JSON object like {V1_FORMAT}")
    instances = body["instances"]
    _check_batch(len(instances), max_batch)
    images = []
    for index, instance in enumerate(instances):
        field = protocol.v1_image_field(instance)
        if field is None:
            raise InvalidRequestError(f'instances[{index}]: expected {{"image": {{"b64": ...}}}}; see {V1_FORMAT}')
        images.append(_b64decode(field["b64"], f"instances[{index}].image.b64"))
    return images


def images_from_v2(request: InferRequest, max_batch: int) -> list[bytes]:
    """The images of a v2 request: one BYTES input of shape [N] or [N, 1]."""
    if len(request.inputs) != 1:
        names = [i.name for i in request.inputs]
        raise InvalidRequestError(
            f"expected one input named {protocol.INPUT_NAME!r} ({protocol.INPUT_DATATYPE}), got {len(names)}: {names}"
        )
    tensor = request.inputs[0]
    if tensor.datatype != protocol.INPUT_DATATYPE:
        raise InvalidRequestError(
            f"input {tensor.name!r} has datatype {tensor.datatype}; expected {protocol.INPUT_DATATYPE}"
        )
    shape = list(tensor.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise InvalidRequestError(f"input {tensor.name!r} has shape {shape}; expected [N] or [N, 1]")
    # Raw bytes over gRPC (raw_input_contents or bytes_contents) and the REST binary-data extension;
    # base64 strings in REST JSON.
    values: list[Any] = _grpc_values(tensor, shape) if request.from_grpc else list(tensor.data or [])
    if len(values) != shape[0]:
        raise InvalidRequestError(f"input {tensor.name!r} declares {shape[0]} elements but carries {len(values)}")
    _check_batch(len(values), max_batch)
    return [bytes(v) if isinstance(v, bytes) else _b64decode(v, f"{tensor.name}[{i}]") for i, v in enumerate(values)]


def _grpc_values(tensor: InferInput, shape: list[int]) -> list[Any]:
    """The elements of a gRPC BYTES tensor; a shape its contents do not fill is the client's error, not ours."""
    try:
        return list(tensor.as_numpy().reshape(-1))
    except (ValueError, TypeError, struct.error) as exc:
        raise InvalidRequestError(
            f"input {tensor.name!r} declares shape {shape} but its contents do not fit it ({exc}); send one BYTES "
            "element per image, in bytes_contents or in raw_input_contents (each a 4-byte little-endian length, "
            "then that many bytes)"
        ) from exc


def v1_response(answers: list[Answer]) -> dict[str, Any]:
    """One prediction per image (``protocol.v1_predictions``)."""
    return protocol.v1_predictions(answers)


def v2_response(request: InferRequest, answers: list[Answer], model_name: str, version: str) -> InferResponse:
    """The ``protocol.OUTPUTS`` in order, shape [N] each: FP32 as float32, BYTES as UTF-8 (``provenance``: JSON
    text); raw contents for a gRPC request, JSON data for REST. The response parameters say what came from the
    result cache (``protocol.v2_parameters``)."""
    count, columns = len(answers), protocol.v2_columns(answers)
    outputs = []
    for name, datatype in protocol.OUTPUTS:
        values = columns[name]
        out = InferOutput(name, [count], datatype)
        if datatype == "FP32":
            array = np.array(values, dtype=np.float32)
        else:
            array = np.array([v.encode() for v in values], dtype=np.object_)
        out.set_data_from_numpy(array, binary_data=request.from_grpc)  # gRPC: raw contents
        outputs.append(out)
    return InferResponse(
        response_id=request.id or str(uuid.uuid4()),  # KServe 0.21 fails on a response without an id
        model_name=model_name,
        model_version=version,
        infer_outputs=outputs,
        from_grpc=request.from_grpc,
        parameters=protocol.v2_parameters(answers),
    )
