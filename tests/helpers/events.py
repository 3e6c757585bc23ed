"""The KServe logger's CloudEvents and the v1/v2 inference bodies they carry, as KServe 0.21 sends them
(``pkg/logger``: binary mode, ce-* headers, the inference request or response as the body). Used by the sink's
unit and integration tests."""

import base64
import json
import struct
from typing import Any

from components.common.provenance import Provenance, Signal
from serving.sink_events import REQUEST_TYPE, RESPONSE_TYPE

CE_TIME = "2026-03-04T05:06:07.123456789Z"


def ce_headers(ce_id: str, kind: str = "request", endpoint: str = "default", **extra: str) -> dict[str, str]:
    """The headers KServe's logger sends with one event."""
    return {
        "ce-id": ce_id,
        "ce-type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
        "ce-specversion": "1.0",
        "ce-source": "http://localhost:9081/",
        "ce-time": CE_TIME,
        "ce-inferenceservicename": "apd-detector",
        "ce-namespace": "apd",
        "ce-endpoint": endpoint,
        "ce-component": "predictor",
        "ce-metadata": "{}",
        "content-type": "application/json",
        **extra,
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def v1_request(*images: bytes) -> bytes:
    return json.dumps({"instances": [{"image": {"b64": b64(i)}} for i in images]}).encode()


def v2_request(*images: bytes) -> bytes:
    tensor = {"name": "image", "shape": [len(images)], "datatype": "BYTES", "data": [b64(i) for i in images]}
    return json.dumps({"id": "r", "inputs": [tensor]}).encode()


def provenance_of(generator: str | None = None) -> dict[str, Any]:
    """The provenance object of an answer (``Provenance.to_dict``): a valid C2PA manifest saying ``generator`` made
    the image, or (None) a file that declares nothing."""
    if generator is None:
        return Provenance().to_dict()
    signal = Signal("c2pa", "ai", generator, "c2pa.created: trainedAlgorithmicMedia")
    return Provenance("valid", (signal,)).to_dict()


def declared_by(declared: tuple[str | None, ...], index: int) -> str | None:
    """The generator image ``index`` declares (None past the end of ``declared``)."""
    return declared[index] if index < len(declared) else None


def v1_response(
    *probabilities: float, version: str = "3", declared: tuple[str | None, ...] = (), with_provenance: bool = True
) -> bytes:
    """``declared``: per image, the AI generator its file declares (None or left out: nothing declared);
    ``with_provenance=False``: a server from before the provenance evidence."""
    predictions = []
    for i, p in enumerate(probabilities):
        generator = declared_by(declared, i)
        prediction = {
            "probability": p,
            "label": "ai_generated" if p >= 0.5 or generator else "real",
            "confidence": "high",
            "model_version": version,
            "inference_time_ms": 1.5,
            "generator": {"name": "sdxl" if p >= 0.5 else "unknown", "probability": 0.75 if p >= 0.5 else 0.4},
        }
        if with_provenance:
            prediction["provenance"] = provenance_of(generator)
            prediction["verdict_source"] = "provenance" if generator else "pixels"
        predictions.append(prediction)
    return json.dumps({"predictions": predictions}).encode()


def v2_response(
    *probabilities: float,
    version: str = "3",
    model: str = "apd-detector",
    declared: tuple[str | None, ...] = (),
    with_provenance: bool = True,
) -> bytes:
    """As ``v1_response``, in v2 JSON: the provenance as one JSON text per image."""
    n = [len(probabilities)]
    generators = [declared_by(declared, i) for i in range(len(probabilities))]
    labels = ["ai_generated" if p >= 0.5 or g else "real" for p, g in zip(probabilities, generators, strict=True)]
    outputs = [
        {"name": "probability", "shape": n, "datatype": "FP32", "data": list(probabilities)},
        {"name": "label", "shape": n, "datatype": "BYTES", "data": labels},
        {"name": "confidence", "shape": n, "datatype": "BYTES", "data": ["low"] * len(probabilities)},
        {"name": "generator", "shape": n, "datatype": "BYTES", "data": ["unknown"] * len(probabilities)},
        {"name": "generator_probability", "shape": n, "datatype": "FP32", "data": [0.0] * len(probabilities)},
    ]
    if with_provenance:
        texts = [json.dumps(provenance_of(g)) for g in generators]
        sources = ["provenance" if g else "pixels" for g in generators]
        outputs += [
            {"name": "provenance", "shape": n, "datatype": "BYTES", "data": texts},
            {"name": "verdict_source", "shape": n, "datatype": "BYTES", "data": sources},
        ]
    return json.dumps({"id": "r", "model_name": model, "model_version": version, "outputs": outputs}).encode()


def bytes_tensor(*elements: bytes) -> bytes:
    """A BYTES tensor in the binary-data extension: each element as its little-endian uint32 length, then it."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def v2_binary_request(*images: bytes) -> bytes:
    """The v2 binary-data extension: the JSON header, then the raw BYTES tensor."""
    raw = bytes_tensor(*images)
    tensor = {
        "name": "image",
        "shape": [len(images)],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(raw)},
    }
    return json.dumps({"inputs": [tensor]}).encode() + raw
