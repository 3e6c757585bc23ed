"""The detector's KServe contract, in one place: what a request carries, what an answer holds, and both directions
between them as pure functions on plain Python data (no kserve, no tritonclient, no numpy: the batch client
``apd predict`` imports this next to tritonclient.grpc, which cannot share a process with kserve).

- v1 (``/v1/models/M:predict`` and ``:explain``): ``{"instances": [{"image": {"b64": ...}}, ...]}`` in, one
  ``predictions`` object per image out (``v1_predictions``).
- v2 (Open Inference Protocol): one BYTES input ``image`` of shape [N] (or [N, 1]): base64 strings in REST JSON,
  raw bytes over gRPC and with the REST binary-data extension; the ``OUTPUTS`` out, one element per image each,
  in that order (``v2_columns``), and the response parameters ``cached`` and ``cached_count`` (``v2_parameters``).
- At most ``DEFAULT_MAX_BATCH`` images per request (the server's ``APD_SERVING__MAX_BATCH`` default).

One type, ``Answer``, is the answer for one image on both sides. The server fills every field. A client reading a
response (``read_v1``, ``read_v2``) gets None for what the response does not hold: a server from before the
provenance evidence sends no ``provenance`` and ``verdict_source`` (its labels all came from the pixels), one from
before attribution no ``generator``, one from before the threshold field no ``threshold``, one from before the
result cache no ``cached``; v2 carries no ``inference_time_ms``, and tells ``cached`` per image only when all or
none of a request's images came from the cache; a value of the wrong type, or a ``provenance`` that is not a
readable evidence object, reads as None too (a malformed field must not cost the rest of the answer). What a None
stands for is the reader's choice (the batch client writes ``pixels`` for a missing ``verdict_source``, the payload
sink keeps null).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from components.common.provenance import Provenance
from components.common.settings import ServingSettings

INPUT_NAME = "image"  # the v2 input; also the v1 instance field (TF Serving's ``image_bytes`` is accepted too)
INPUT_DATATYPE = "BYTES"
V1_IMAGE_FIELDS = (INPUT_NAME, "image_bytes")  # the v1 instance keys that hold {"b64": ...}, in order of preference
# The v2 outputs (name, datatype), one element per image each, named after the Answer fields they carry;
# ``provenance`` holds the evidence object as JSON text.
OUTPUTS = (
    ("probability", "FP32"),
    ("label", "BYTES"),
    ("confidence", "BYTES"),
    ("generator", "BYTES"),
    ("generator_probability", "FP32"),
    ("provenance", "BYTES"),
    ("verdict_source", "BYTES"),
    ("threshold", "FP32"),
)
OUTPUT_NAMES = tuple(name for name, _ in OUTPUTS)
REQUIRED_OUTPUTS = OUTPUT_NAMES[:3]  # what every server version answers: probability, label, confidence
DEFAULT_MAX_BATCH: int = ServingSettings.model_fields["max_batch"].default  # images per request
PIXELS, PROVENANCE = "pixels", "provenance"  # the values of verdict_source
# The v2 response parameters of the result cache: a parameter holds one value per response, not one per image, so
# ``cached`` is true when every image of the request was served from the cache and ``cached_count`` says how many
# were (per image: the v1 field, or one image per request).
CACHED, CACHED_COUNT = "cached", "cached_count"


def v1_request_example(image: str = "<base64>") -> str:
    """The v1 request format in words, for messages: ``{"instances": [{"image": {"b64": "<base64>"}}, ...]}``."""
    return f'{{"instances": [{{"{INPUT_NAME}": {{"b64": "{image}"}}}}, ...]}}'


def v2_request_example(image: str = "<base64>") -> str:
    """The v2 JSON request format in words, for messages."""
    tensor = f'"name": "{INPUT_NAME}", "datatype": "{INPUT_DATATYPE}", "shape": [N], "data": ["{image}", ...]'
    return f'{{"inputs": [{{{tensor}}}]}}'


@dataclass(frozen=True)
class Answer:
    """The answer for one image. Server side every field is set; read from a response, a field it lacks is None
    (see the module's docstring)."""

    probability: float | None  # the pixel model's calibrated probability that the image is AI-generated
    label: str | None  # ai_generated | real: the pixels' verdict, or ai_generated when the file declares AI origin
    confidence: str | None  # low | medium | high (high for a verdict from provenance)
    model_version: str | None
    inference_time_ms: float | None = None  # per image, as the server measured it (v1 only)
    # Attribution: the most likely generator recipe among those the model trained on, given that the image is
    # AI-generated ("unknown" under 0.5 and for models without an attribution head), and its probability (0.0
    # without an attribution head). Filled for every image, whatever its label.
    generator: str | None = None
    generator_probability: float | None = None
    provenance: Provenance | None = None  # what the file declares about its origin (C2PA, IPTC, generator metadata)
    verdict_source: str | None = None  # pixels | provenance: what decided the label
    # The model version's decision threshold: the pixels' label is ai_generated from this probability on.
    threshold: float | None = None
    # Served from the server's result cache: the answer stored for the same bytes, model version and variant (v1 per
    # image; v2 in the response parameters ``cached``/``cached_count``, not an output).
    cached: bool | None = None

    @property
    def ai_declared(self) -> bool | None:
        """The file declares AI generation or AI compositing (None without evidence)."""
        return self.provenance.ai_declared if self.provenance else None

    @property
    def c2pa(self) -> str | None:
        """absent | valid | trusted | invalid | unreadable (None without evidence)."""
        return self.provenance.c2pa if self.provenance else None

    @property
    def provenance_generator(self) -> str | None:
        """The generator named by the strongest AI declaration of the file (None without one)."""
        return as_text(self.provenance.generator) if self.provenance else None


# ---- requests ------------------------------------------------------------------------------------------------


def _b64(image: bytes) -> str:
    return base64.b64encode(image).decode()


def v1_request(images: Sequence[bytes]) -> dict[str, Any]:
    """``{"instances": [{"image": {"b64": ...}}, ...]}`` (predict and explain)."""
    return {"instances": [{INPUT_NAME: {"b64": _b64(image)}} for image in images]}


def v2_request(images: Sequence[bytes], request_id: str | None = None) -> dict[str, Any]:
    """A v2 REST JSON request: the images as base64 strings of the one BYTES input; ``id`` when given."""
    tensor = {"name": INPUT_NAME, "datatype": INPUT_DATATYPE, "shape": [len(images)], "data": list(map(_b64, images))}
    return ({"id": request_id} if request_id is not None else {}) | {"inputs": [tensor]}


def v1_image_field(instance: object) -> dict[str, Any] | None:
    """The ``{"b64": ...}`` object of a v1 instance (under ``image``, else ``image_bytes``); None without one."""
    if not isinstance(instance, dict):
        return None
    field = next((instance[key] for key in V1_IMAGE_FIELDS if key in instance), None)
    return field if isinstance(field, dict) and "b64" in field else None


# ---- answers, server side -------------------------------------------------------------------------------------


def v1_predictions(answers: Sequence[Answer]) -> dict[str, Any]:
    """``{"predictions": [...]}``, one object per image: the answer's fields, the evidence as ``"provenance":
    {"ai_declared": ..., "c2pa": ..., "signals": [...], "unreadable": [...]}``, the attribution last, nested as
    ``"generator": {"name": ..., "probability": ...}``."""
    return {
        "predictions": [
            {
                "probability": a.probability,
                "threshold": a.threshold,
                "label": a.label,
                "confidence": a.confidence,
                "model_version": a.model_version,
                "inference_time_ms": a.inference_time_ms,
                "cached": a.cached,
                "provenance": a.provenance.to_dict() if a.provenance else None,
                "verdict_source": a.verdict_source,
                "generator": {"name": a.generator, "probability": a.generator_probability},
            }
            for a in answers
        ]
    }


def _column_value(answer: Answer, name: str) -> Any:
    if name == "provenance":
        return answer.provenance.to_json() if answer.provenance else None
    return getattr(answer, name)


def v2_columns(answers: Sequence[Answer]) -> dict[str, list[Any]]:
    """The v2 outputs of ``answers``: name -> one value per image, in the order of ``OUTPUTS`` (FP32 as float,
    BYTES as str; ``provenance`` as its JSON text). The server encodes them into tensors."""
    return {name: [_column_value(a, name) for a in answers] for name in OUTPUT_NAMES}


def v2_parameters(answers: Sequence[Answer]) -> dict[str, Any]:
    """The v2 response parameters of ``answers``: ``cached`` (every image served from the result cache) and
    ``cached_count`` (how many were)."""
    count = sum(1 for a in answers if a.cached)
    return {CACHED: bool(answers) and count == len(answers), CACHED_COUNT: count}


# ---- answers, client side -------------------------------------------------------------------------------------


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def as_text(value: Any) -> str | None:
    """A text field of a response: str as it is, bytes decoded (UTF-8, errors replaced), None as None."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else (None if value is None else str(value))


def error_message(text: str) -> str | None:
    """The message of a KServe error answer, ``{"error": "..."}`` (FastAPI's ``{"detail": "..."}`` too); None when
    ``text`` is not one."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        return None
    message = (body.get("error") or body.get("detail")) if isinstance(body, dict) else None
    return message if isinstance(message, str) else None


def read_provenance(value: Any) -> Provenance | None:
    """The evidence of an answer: the object (v1) or its JSON text (v2, str or bytes); None when it is missing or
    unreadable (not JSON, not an object, fields of the wrong type)."""
    if isinstance(value, bytes | str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # ValueError: also UnicodeDecodeError
            return None
    if not isinstance(value, dict):
        return None
    try:
        return Provenance.from_dict(value)
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError):
        return None


def read_v1(document: Mapping[str, Any]) -> list[Answer]:
    """The answers of a v1 response document ``{"predictions": [...]}``, one per prediction; a bare number (not an
    object) reads as the probability alone."""
    answers = []
    for item in document.get("predictions") or []:
        if not isinstance(item, dict):
            answers.append(Answer(_float(item), None, None, None))
            continue
        generator = item.get("generator")
        generator = generator if isinstance(generator, dict) else {}
        answers.append(
            Answer(
                probability=_float(item.get("probability")),
                label=as_text(item.get("label")),
                confidence=as_text(item.get("confidence")),
                model_version=as_text(item.get("model_version")),
                inference_time_ms=_float(item.get("inference_time_ms")),
                generator=as_text(generator.get("name")),
                generator_probability=_float(generator.get("probability")),
                provenance=read_provenance(item.get("provenance")),
                verdict_source=as_text(item.get("verdict_source")),
                threshold=_float(item.get("threshold")),
                cached=_bool(item.get("cached")),
            )
        )
    return answers


def read_cached(parameters: Mapping[str, Any] | None, count: int) -> bool | None:
    """Whether each of the ``count`` images of a v2 response was served from the result cache, from its response
    parameters (plain values: REST JSON, or gRPC's converted by the caller): True when all were, False when none
    was, None when some were (which ones a parameter cannot say) or the server has no cache."""
    values = parameters if isinstance(parameters, Mapping) else {}
    cached_count = values.get(CACHED_COUNT)
    if isinstance(cached_count, int) and not isinstance(cached_count, bool):
        if cached_count == 0:
            return False
        return True if cached_count == count else None
    return _bool(values.get(CACHED))


def read_v2(
    columns: Mapping[str, Sequence[Any]],
    model_version: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> list[Answer]:
    """The answers of v2 output columns: output name -> its values, one per image (JSON values, or the elements of
    a binary tensor as the caller split them: BYTES as bytes, FP32 as float). One answer per element of the longest
    known output; ``model_version`` and ``parameters`` (``cached``, see ``read_cached``) are the response's.
    Outputs it does not know are left out."""
    known = {name: list(columns.get(name) or []) for name in OUTPUT_NAMES}
    count = max(len(values) for values in known.values())
    cached = read_cached(parameters, count)

    def at(name: str, index: int) -> Any:
        values = known[name]
        return values[index] if index < len(values) else None

    return [
        Answer(
            probability=_float(at("probability", i)),
            label=as_text(at("label", i)),
            confidence=as_text(at("confidence", i)),
            model_version=model_version,
            generator=as_text(at("generator", i)),
            generator_probability=_float(at("generator_probability", i)),
            provenance=read_provenance(at("provenance", i)),
            verdict_source=as_text(at("verdict_source", i)),
            threshold=_float(at("threshold", i)),
            cached=cached,
        )
        for i in range(count)
    ]
