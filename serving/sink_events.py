"""What the payload sink reads from a KServe logger event: the CloudEvent headers, the v1 / v2 (JSON or binary
extension) request and response bodies, and per-image features of the request's images (``serving/sink.py``
pairs them and writes the records).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from components.common import protocol
from components.common.errors import DetectorError, InvalidImageError
from components.common.features import image_features
from components.common.images import decode_image
from components.common.protocol import Answer
from components.common.settings import ImageLimits

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
KINDS = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}
ACCEPTED = (
    f"binary-mode CloudEvents from KServe's payload logger: headers ce-id and ce-type ({REQUEST_TYPE} or "
    f"{RESPONSE_TYPE}), the inference request or response JSON as the body"
)
V1_REQUEST = protocol.v1_request_example()
V2_REQUEST = protocol.v2_request_example()
V1_RESPONSE = '{"predictions": [{"probability": p, "label": "...", "confidence": "...", "model_version": "..."}]}'
V2_RESPONSE = '{"model_name": "...", "model_version": "...", "outputs": [{"name": "probability", "data": [...]}, ...]}'
DRAFT_SIZE = 256  # JPEG draft decoding: features are measured on at most 256 px anyway
_JSON = json.JSONDecoder()


class SinkEventError(DetectorError):
    """An event the sink cannot take: says what was wrong and what is accepted. ``reason`` labels the metric."""

    def __init__(self, message: str, reason: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Event:
    """One CloudEvent: the request or the response of one inference call."""

    id: str
    kind: str  # request | response
    inference_service: str
    namespace: str
    endpoint: str
    component: str
    source: str
    time: float | None  # ce-time, seconds since the epoch
    received: float
    content_type: str
    body: bytes = field(repr=False, default=b"")

    @property
    def pair_key(self) -> str:
        return f"{self.namespace}|{self.inference_service}|{self.id}"

    @property
    def key(self) -> str:
        """What makes an event a duplicate: the same ce-id and type (of the same InferenceService)."""
        return f"{self.kind}|{self.pair_key}"

    def meta(self) -> bytes:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "body"}).encode()

    @classmethod
    def from_log(cls, meta: bytes, body: bytes) -> Event:
        return cls(**json.loads(meta), body=body)


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def parse_event(headers: Mapping[str, str], body: bytes, received: float) -> Event:
    """A binary-mode CloudEvent (``headers`` lower-case) -> ``Event``, its body checked to be a v1/v2 shape.

    Raises:
        SinkEventError: structured mode, ce-id or ce-type missing, unknown type or spec version, a body that is not
            JSON or not a v1/v2 request or response.
    """
    if headers.get("content-type", "").startswith("application/cloudevents"):
        raise SinkEventError(f"structured-mode CloudEvents are not accepted; send {ACCEPTED}", "structured_mode", 415)
    missing = [name for name in ("ce-id", "ce-type") if not headers.get(name)]
    if missing:
        raise SinkEventError(
            f"not a CloudEvent: no {' or '.join(missing)} header; the sink takes {ACCEPTED}", "not_a_cloudevent"
        )
    version = headers.get("ce-specversion", "1.0")
    if not version.startswith("1."):
        raise SinkEventError(
            f"CloudEvents spec version {version} is not supported; send 1.0", "unsupported_specversion"
        )
    kind = KINDS.get(headers["ce-type"])
    if kind is None:
        raise SinkEventError(f"unknown ce-type {headers['ce-type']!r}; the sink takes {ACCEPTED}", "unknown_type")
    document, tail = load_body(body)
    check_shape(kind, document, tail)
    return Event(
        id=headers["ce-id"],
        kind=kind,
        inference_service=headers.get("ce-inferenceservicename", ""),
        namespace=headers.get("ce-namespace", ""),
        endpoint=headers.get("ce-endpoint", ""),
        component=headers.get("ce-component", ""),
        source=headers.get("ce-source", ""),
        time=_parse_time(headers.get("ce-time")),
        received=received,
        content_type=headers.get("content-type", ""),
        body=body,
    )


def load_body(body: bytes) -> tuple[Any, bytes]:
    """The JSON document of a body and the bytes after it (the v2 binary-data extension puts tensors there)."""
    try:
        return json.loads(body), b""
    except (UnicodeDecodeError, json.JSONDecodeError):
        text = body.decode("utf-8", "surrogateescape")
        try:
            document, end = _JSON.raw_decode(text)
        except json.JSONDecodeError as exc:
            raise SinkEventError(
                f"the body is not JSON ({exc.msg} at byte {exc.pos}); expected a v1 or v2 inference request or "
                "response (JSON, optionally followed by v2 binary data)",
                "invalid_json",
            ) from exc
        return document, body[len(text[:end].encode("utf-8", "surrogateescape")) :]


def _binary_offsets(tensors: list[Any]) -> dict[int, tuple[int, int]]:
    """Tensor index -> (start, end) in the binary part, for tensors with ``parameters.binary_data_size``."""
    offsets, position = {}, 0
    for index, tensor in enumerate(tensors):
        size = (tensor.get("parameters") or {}).get("binary_data_size") if isinstance(tensor, dict) else None
        if isinstance(size, int) and size >= 0:
            offsets[index] = (position, position + size)
            position += size
    return offsets


def check_shape(kind: str, document: Any, tail: bytes) -> None:
    """Raises ``SinkEventError`` unless ``document`` is a non-empty v1 or v2 request/response."""
    if kind == "request":
        names, expected = ("instances", "inputs"), f"a v1 request {V1_REQUEST} or a v2 request {V2_REQUEST}"
    else:
        names, expected = ("predictions", "outputs"), f"a v1 response {V1_RESPONSE} or a v2 response {V2_RESPONSE}"
    items = next((document[n] for n in names if isinstance(document, dict) and n in document), None)
    if not isinstance(items, list) or not items:
        got = f"an object with keys {sorted(document)[:8]}" if isinstance(document, dict) else type(document).__name__
        raise SinkEventError(f"the {kind} body is {got}; expected {expected}", f"invalid_{kind}")
    binary = _binary_offsets(items) if names[1] in document else {}
    declared = max((end for _, end in binary.values()), default=0)
    if len(tail) != declared:
        raise SinkEventError(
            f"the body holds {len(tail)} bytes after its JSON but declares {declared} (binary_data_size); "
            "send plain JSON or the v2 binary-data extension",
            "invalid_json",
        )


def _b64(value: Any, where: str) -> bytes | str:
    if not isinstance(value, str):
        return f"{where}: expected a base64 string, got {type(value).__name__}"
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        return f"{where}: invalid base64 ({exc})"


def _split_bytes(data: bytes) -> list[bytes]:
    """v2 binary BYTES tensor: each element is a little-endian uint32 length, then the bytes."""
    elements, position = [], 0
    while position + 4 <= len(data):
        (length,) = struct.unpack_from("<I", data, position)
        elements.append(data[position + 4 : position + 4 + length])
        position += 4 + length
    return elements


def _tensor_values(tensors: list[Any], index: int, tail: bytes) -> list[Any]:
    tensor = tensors[index]
    span = _binary_offsets(tensors).get(index)
    if span is not None:
        raw = tail[span[0] : span[1]]
        if tensor.get("datatype") == "BYTES":
            return _split_bytes(raw)
        if tensor.get("datatype") == "FP32":
            return list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4]))
        return []
    data = tensor.get("data")
    if not isinstance(data, list):
        return []
    return [v for item in data for v in (item if isinstance(item, list) else [item])]  # [N] or [N, 1]


def request_images(document: dict[str, Any], tail: bytes) -> list[bytes | str]:
    """The image bytes of a checked request, one per image; a str says why that element holds no image."""
    if "instances" in document:
        images: list[bytes | str] = []
        for index, instance in enumerate(document["instances"]):
            image = protocol.v1_image_field(instance)
            where = f"instances[{index}].image.b64"
            images.append(_b64(image["b64"], where) if image is not None else f"no {where}")
        return images
    tensors = document["inputs"]
    names = [t.get("name") if isinstance(t, dict) else None for t in tensors]
    index = names.index(protocol.INPUT_NAME) if protocol.INPUT_NAME in names else 0
    tensor = tensors[index]
    if not isinstance(tensor, dict) or tensor.get("datatype") != protocol.INPUT_DATATYPE:
        datatype = tensor.get("datatype") if isinstance(tensor, dict) else type(tensor).__name__
        return [f"input {names[index]!r} has datatype {datatype}; expected {protocol.INPUT_DATATYPE} (encoded images)"]
    values = _tensor_values(tensors, index, tail)
    if not values:
        return [f"input {names[index]!r} holds no data"]
    where = f"{names[index]}"
    return [v if isinstance(v, bytes) else _b64(v, f"{where}[{i}]") for i, v in enumerate(values)]


@dataclass(frozen=True)
class ParsedResponse:
    model_name: str | None
    model_version: str | None
    predictions: list[Answer]  # fields the response lacks are None (``components.common.protocol``)


def parse_response(document: dict[str, Any], tail: bytes) -> ParsedResponse:
    """The answers of a checked v1 or v2 response (fields it lacks are None)."""
    if "predictions" in document:
        predictions = protocol.read_v1(document)
        version = next((p.model_version for p in predictions if p.model_version), None)
        return ParsedResponse(protocol.as_text(document.get("model_name")), version, predictions)
    tensors = document["outputs"]
    by_name = {t.get("name"): i for i, t in enumerate(tensors) if isinstance(t, dict)}
    columns = {n: _tensor_values(tensors, by_name[n], tail) for n in protocol.OUTPUT_NAMES if n in by_name}
    version = protocol.as_text(document.get("model_version"))
    answers = protocol.read_v2(columns, version, document.get("parameters"))
    return ParsedResponse(protocol.as_text(document.get("model_name")), version, answers)


@dataclass(frozen=True)
class ImageInfo:
    """What the sink keeps of one request image."""

    features: dict[str, float | str] | None
    decode_error: str | None
    sha256: str | None
    format: str  # JPEG | PNG | WEBP | bin (not decodable)
    data: bytes | None  # the image itself, only with keep_images


def analyse_request(body: bytes, limits: ImageLimits, keep_images: bool) -> list[ImageInfo]:
    """Decode every image of a request and measure its features (runs in the worker processes)."""
    document, tail = load_body(body)
    infos = []
    for item in request_images(document, tail):
        if isinstance(item, str):
            infos.append(ImageInfo(None, item, None, "bin", None))
            continue
        sha = hashlib.sha256(item).hexdigest()
        kept = item if keep_images else None
        try:
            decoded = decode_image(item, limits, draft_size=DRAFT_SIZE)
        except InvalidImageError as exc:
            infos.append(ImageInfo(None, str(exc), sha, "bin", kept))
            continue
        infos.append(ImageInfo(image_features(decoded), None, sha, decoded.format, kept))
    return infos
