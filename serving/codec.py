"""Protocol codec: KServe v1 / v2 (Open Inference Protocol) requests <-> image bytes and detection results.

Pure functions, no model inside. Every malformed request raises ``InvalidRequestError`` with a message that
says what was wrong and what is accepted; the model server turns it into HTTP 400 / gRPC INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from dataclasses import fields as fields_of
from typing import Any

import numpy as np
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from components.common.errors import InvalidRequestError
from components.common.provenance import Provenance

V1_FORMAT = '{"instances": [{"image": {"b64": "<base64 JPEG, PNG or WebP>"}}, ...]}'
V2_INPUT = "image"  # one BYTES input, shape [N] or [N, 1]: base64 strings in REST JSON, else raw bytes
# The v2 outputs (name, datatype), one element per image each, named after the Detection fields they carry;
# ``provenance`` holds the evidence object as JSON text.
V2_OUTPUTS = (
    ("probability", "FP32"),
    ("label", "BYTES"),
    ("confidence", "BYTES"),
    ("generator", "BYTES"),
    ("generator_probability", "FP32"),
    ("provenance", "BYTES"),
    ("verdict_source", "BYTES"),
)


@dataclass(frozen=True)
class Detection:
    """The answer for one image."""

    probability: float  # the pixel model's calibrated probability that the image is AI-generated
    label: str  # ai_generated | real: the pixels' verdict, or ai_generated when the file declares AI origin
    confidence: str  # low | medium | high (high for a verdict from provenance)
    model_version: str
    inference_time_ms: float
    # Attribution: the most likely generator recipe among those the model trained on, given that the image is
    # AI-generated ("unknown" under 0.5 and for models without an attribution head), and its probability (0.0
    # without an attribution head). Filled for every image, whatever its label.
    generator: str
    generator_probability: float
    provenance: Provenance  # what the file declares about its origin (C2PA, IPTC, generator metadata)
    verdict_source: str  # pixels | provenance: what decided the label


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
        field = instance.get("image", instance.get("image_bytes")) if isinstance(instance, dict) else None
        if not isinstance(field, dict) or "b64" not in field:
            raise InvalidRequestError(f'instances[{index}]: expected {{"image": {{"b64": ...}}}}; see {V1_FORMAT}')
        images.append(_b64decode(field["b64"], f"instances[{index}].image.b64"))
    return images


def images_from_v2(request: InferRequest, max_batch: int) -> list[bytes]:
    """The images of a v2 request: one BYTES input of shape [N] or [N, 1]."""
    if len(request.inputs) != 1:
        names = [i.name for i in request.inputs]
        raise InvalidRequestError(f"expected one input named {V2_INPUT!r} (BYTES), got {len(names)}: {names}")
    tensor = request.inputs[0]
    if tensor.datatype != "BYTES":
        raise InvalidRequestError(f"input {tensor.name!r} has datatype {tensor.datatype}; expected BYTES")
    shape = list(tensor.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise InvalidRequestError(f"input {tensor.name!r} has shape {shape}; expected [N] or [N, 1]")
    # Raw bytes over gRPC (raw_input_contents or bytes_contents) and the REST binary-data extension;
    # base64 strings in REST JSON.
    values: list[Any] = list(tensor.as_numpy().reshape(-1)) if request.from_grpc else list(tensor.data or [])
    if len(values) != shape[0]:
        raise InvalidRequestError(f"input {tensor.name!r} declares {shape[0]} elements but carries {len(values)}")
    _check_batch(len(values), max_batch)
    return [bytes(v) if isinstance(v, bytes) else _b64decode(v, f"{tensor.name}[{i}]") for i, v in enumerate(values)]


def v1_response(detections: list[Detection]) -> dict[str, Any]:
    """One prediction per image; the attribution nested as ``"generator": {"name": ..., "probability": ...}``, the
    evidence as ``"provenance": {"ai_declared": ..., "c2pa": ..., "signals": [...], "unreadable": [...]}``."""
    predictions = []
    for d in detections:
        fields = {f.name: getattr(d, f.name) for f in fields_of(d)}
        name, probability = fields.pop("generator"), fields.pop("generator_probability")
        fields["provenance"] = d.provenance.to_dict()
        predictions.append({**fields, "generator": {"name": name, "probability": probability}})
    return {"predictions": predictions}


def _v2_value(detection: Detection, name: str) -> Any:
    return detection.provenance.to_json() if name == "provenance" else getattr(detection, name)


def v2_response(request: InferRequest, detections: list[Detection], model_name: str, version: str) -> InferResponse:
    """Outputs ``probability`` (FP32, [N]), ``label`` and ``confidence`` (BYTES, [N]), ``generator`` (BYTES, [N]),
    ``generator_probability`` (FP32, [N]), ``provenance`` (BYTES, [N], JSON text) and ``verdict_source`` (BYTES,
    [N]), in the order of ``V2_OUTPUTS``."""
    count = len(detections)
    outputs = []
    for name, datatype in V2_OUTPUTS:
        out = InferOutput(name, [count], datatype)
        if datatype == "FP32":
            values = np.array([_v2_value(d, name) for d in detections], dtype=np.float32)
        else:
            values = np.array([_v2_value(d, name).encode() for d in detections], dtype=np.object_)
        out.set_data_from_numpy(values, binary_data=request.from_grpc)  # gRPC: raw contents
        outputs.append(out)
    return InferResponse(
        response_id=request.id or str(uuid.uuid4()),  # KServe 0.21 fails on a response without an id
        model_name=model_name,
        model_version=version,
        infer_outputs=outputs,
        from_grpc=request.from_grpc,
    )
