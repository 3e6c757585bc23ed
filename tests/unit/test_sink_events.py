"""The payload sink's event parsing (KServe logger CloudEvents, v1/v2 bodies), without HTTP; the events are built
as KServe's logger sends them (``tests.helpers.events``)."""

import json
import struct
from typing import Any

import pytest

from components.common.settings import ImageLimits
from serving.sink_events import (
    REQUEST_TYPE,
    Event,
    SinkEventError,
    analyse_request,
    load_body,
    parse_event,
    parse_response,
    request_images,
)
from tests.helpers.events import (
    b64,
    bytes_tensor,
    ce_headers,
    provenance_of,
    v1_request,
    v1_response,
    v2_binary_request,
    v2_request,
    v2_response,
)
from tests.helpers.images import encode

JPEG = encode("JPEG", (64, 48), seed=1)
PNG = encode("PNG", (40, 40), seed=2)


# Each good event: (headers, body, kind, images in it or predictions in it).
GOOD = [
    pytest.param(ce_headers("a"), v1_request(JPEG, PNG), "request", 2, id="v1-request"),
    pytest.param(ce_headers("b"), v2_request(JPEG), "request", 1, id="v2-request"),
    pytest.param(
        ce_headers("c", **{"content-type": "application/octet-stream"}),
        v2_binary_request(JPEG, PNG),
        "request",
        2,
        id="v2-binary-request",
    ),
    pytest.param(ce_headers("d", "response"), v1_response(0.9, 0.1), "response", 2, id="v1-response"),
    pytest.param(ce_headers("e", "response", "canary"), v2_response(0.7), "response", 1, id="v2-response"),
]


@pytest.mark.parametrize(("headers", "body", "kind", "count"), GOOD)
def test_good_events_parse(headers: dict[str, str], body: bytes, kind: str, count: int) -> None:
    event = parse_event(headers, body, received=1.0)
    assert (event.id, event.kind, event.body) == (headers["ce-id"], kind, body)
    assert (event.inference_service, event.namespace, event.endpoint) == ("apd-detector", "apd", headers["ce-endpoint"])
    assert event.time == pytest.approx(1772600767.123456)  # nanoseconds cut to microseconds
    document, tail = load_body(body)
    if kind == "request":
        assert all(isinstance(i, bytes) for i in request_images(document, tail))
        assert len(request_images(document, tail)) == count
    else:
        assert len(parse_response(document, tail).predictions) == count


GOOD_REQUEST = v1_request(JPEG)
GOOD_RESPONSE = v1_response(0.5)
# Each bad event: (headers, body, reason, HTTP status, a phrase the message must hold).
BAD = [
    # no ce-id: not a CloudEvent at all
    pytest.param(
        {"content-type": "application/json", "ce-type": REQUEST_TYPE},
        GOOD_REQUEST,
        "not_a_cloudevent",
        400,
        "no ce-id",
        id="no-ce-id",
    ),
    # no ce-type
    pytest.param({"ce-id": "x"}, GOOD_REQUEST, "not_a_cloudevent", 400, "no ce-type", id="no-ce-type"),
    # a CloudEvent of some other producer
    pytest.param(
        ce_headers("x", **{"ce-type": "com.example.order"}),
        GOOD_REQUEST,
        "unknown_type",
        400,
        "org.kubeflow.serving.inference.request",
        id="unknown-type",
    ),
    # CloudEvents 0.3
    pytest.param(
        ce_headers("x", **{"ce-specversion": "0.3"}), GOOD_REQUEST, "unsupported_specversion", 400, "1.0", id="old-spec"
    ),
    # structured mode: the event as one JSON document
    pytest.param(
        ce_headers("x", **{"content-type": "application/cloudevents+json"}),
        b"{}",
        "structured_mode",
        415,
        "binary-mode",
        id="structured",
    ),
    # empty body
    pytest.param(ce_headers("x"), b"", "invalid_json", 400, "not JSON", id="empty"),
    # not JSON
    pytest.param(ce_headers("x"), b"<html>", "invalid_json", 400, "not JSON", id="not-json"),
    # JSON followed by bytes that no binary_data_size declares
    pytest.param(
        ce_headers("x"), GOOD_REQUEST + b"\xff\x00", "invalid_json", 400, "binary_data_size", id="trailing-bytes"
    ),
    # a JSON list
    pytest.param(ce_headers("x"), b"[1, 2]", "invalid_request", 400, '{"instances"', id="request-list"),
    # v1 without images
    pytest.param(ce_headers("x"), b'{"instances": []}', "invalid_request", 400, "v2 request", id="request-empty"),
    # a response body sent as a request
    pytest.param(
        ce_headers("x"), GOOD_RESPONSE, "invalid_request", 400, "keys ['predictions']", id="response-as-request"
    ),
    # a request body sent as a response
    pytest.param(
        ce_headers("x", "response"), GOOD_REQUEST, "invalid_response", 400, '{"predictions"', id="request-as-response"
    ),
    # v2 outputs that are not a list
    pytest.param(
        ce_headers("x", "response"), b'{"outputs": "p"}', "invalid_response", 400, "v2 response", id="outputs-not-list"
    ),
]


@pytest.mark.parametrize(("headers", "body", "reason", "status", "phrase"), BAD)
def test_bad_events_are_refused_with_a_reason(
    headers: dict[str, str], body: bytes, reason: str, status: int, phrase: str
) -> None:
    with pytest.raises(SinkEventError) as caught:
        parse_event(headers, body, received=1.0)
    assert (caught.value.reason, caught.value.status) == (reason, status)
    assert phrase in str(caught.value)


# Images of a request, element by element: bytes, or why the element holds none.
IMAGES = [
    pytest.param({"instances": [{"image": {"b64": b64(b"abc")}}]}, b"", [b"abc"], id="v1"),
    pytest.param({"instances": [{"image_bytes": {"b64": b64(b"abc")}}]}, b"", [b"abc"], id="v1-image-bytes"),
    # one bad element does not spoil the others
    pytest.param(
        {"instances": [{"image": {"b64": "%%"}}, {"image": {"b64": b64(b"ok")}}]},
        b"",
        ["instances[0].image.b64: invalid base64", b"ok"],
        id="v1-bad-base64",
    ),
    pytest.param({"instances": [{"picture": 1}]}, b"", ["no instances[0].image.b64"], id="v1-no-image"),
    pytest.param(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": [b64(b"a"), b64(b"b")]}]},
        b"",
        [b"a", b"b"],
        id="v2",
    ),
    # shape [N, 1] as nested lists
    pytest.param(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1], "data": [[b64(b"a")]]}]},
        b"",
        [b"a"],
        id="v2-nested",
    ),
    # the input named image is taken, wherever it is
    pytest.param(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "data": [1.0]},
                {"name": "image", "datatype": "BYTES", "data": [b64(b"a")]},
            ]
        },
        b"",
        [b"a"],
        id="v2-named",
    ),
    pytest.param(
        {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [0.5]}]},
        b"",
        ["input 'image' has datatype FP32; expected BYTES"],
        id="v2-not-bytes",
    ),
    pytest.param(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 11}}]},
        bytes_tensor(b"a", b"bc"),
        [b"a", b"bc"],
        id="v2-binary",
    ),
]


@pytest.mark.parametrize(("document", "tail", "expected"), IMAGES)
def test_request_images(document: dict[str, Any], tail: bytes, expected: list[bytes | str]) -> None:
    images = request_images(document, tail)
    assert len(images) == len(expected)
    for got, want in zip(images, expected, strict=True):
        assert got == want if isinstance(want, bytes) else isinstance(got, str) and got.startswith(want)


def test_responses_v1_v2_and_binary() -> None:
    v1 = parse_response(json.loads(v1_response(0.9, 0.2, version="5")), b"")
    assert v1.model_name is None
    assert v1.model_version == "5"
    assert [(p.probability, p.label, p.model_version) for p in v1.predictions] == [
        (0.9, "ai_generated", "5"),
        (0.2, "real", "5"),
    ]
    assert parse_response({"predictions": [0.25, "x"]}, b"").predictions[0].probability == 0.25  # bare scores
    v2 = parse_response(json.loads(v2_response(0.75, version="7", model="m")), b"")
    assert (v2.model_name, v2.model_version) == ("m", "7")
    first = v2.predictions[0]
    assert (first.probability, first.label, first.confidence, first.model_version) == (0.75, "ai_generated", "low", "7")
    probability, labels = struct.pack("<2f", 0.5, 0.25), bytes_tensor(b"ai_generated", b"real")
    generators = bytes_tensor(b"sdxl", b"unknown")  # an output the sink does not keep, between two it does
    header = {
        "model_name": "m",
        "model_version": "7",
        "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
            {
                "name": "generator",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(generators)},
            },
            {"name": "label", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(labels)}},
        ],
    }
    document, tail = load_body(json.dumps(header).encode() + probability + generators + labels)
    binary = parse_response(document, tail)
    assert [(p.probability, p.label, p.confidence) for p in binary.predictions] == [
        (0.5, "ai_generated", None),
        (0.25, "real", None),
    ]


def _facts(predictions: list[Any]) -> list[tuple[Any, ...]]:
    return [(p.ai_declared, p.c2pa, p.provenance_generator, p.verdict_source) for p in predictions]


DECLARED = (True, "valid", "Adobe Firefly", "provenance")
NOTHING_DECLARED = (False, "absent", None, "pixels")
OLD_SERVER = (None, None, None, None)


def test_provenance_of_v1_and_v2_json_responses() -> None:
    for build in (v1_response, v2_response):
        body = build(0.2, 0.9, declared=("Adobe Firefly", None))
        parsed = parse_response(*load_body(body))
        assert _facts(parsed.predictions) == [DECLARED, NOTHING_DECLARED], build.__name__
        assert parsed.predictions[0].label == "ai_generated"  # the file's declaration decided
        old = parse_response(*load_body(build(0.2, with_provenance=False)))  # a server without the evidence
        assert _facts(old.predictions) == [OLD_SERVER], build.__name__
    assert _facts(parse_response({"predictions": [0.25]}, b"").predictions) == [OLD_SERVER]  # bare scores


def test_provenance_of_a_binary_v2_response() -> None:
    """The binary-data extension: the provenance JSON texts arrive as raw bytes."""
    probability = struct.pack("<3f", 0.25, 0.5, 0.75)
    texts = bytes_tensor(json.dumps(provenance_of("Adobe Firefly")).encode(), b'{"c2pa": "absent", "sig', b"[]")
    sources = bytes_tensor(b"provenance", b"pixels", b"pixels")
    header = {
        "model_name": "m",
        "model_version": "7",
        "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 12}},
            {"name": "provenance", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": len(texts)}},
            {
                "name": "verdict_source",
                "datatype": "BYTES",
                "shape": [3],
                "parameters": {"binary_data_size": len(sources)},
            },
        ],
    }
    body = json.dumps(header).encode() + probability + texts + sources
    event = parse_event(ce_headers("bin", "response", **{"content-type": "application/octet-stream"}), body, 1.0)
    predictions = parse_response(*load_body(event.body)).predictions
    # a truncated JSON text and one that is not an object cost only the provenance, not the record
    assert _facts(predictions) == [DECLARED, (None, None, None, "pixels"), (None, None, None, "pixels")]
    assert [p.probability for p in predictions] == [0.25, 0.5, 0.75]


def test_a_malformed_provenance_costs_only_the_evidence() -> None:
    """What counts as malformed is the contract's reading (table-tested in test_protocol.py); here, that the sink
    keeps the record with the rest of the answer, over v1 and v2 JSON."""
    v1 = {"predictions": [{"probability": 0.5, "provenance": "{not json", "verdict_source": "pixels"}]}
    assert _facts(parse_response(v1, b"").predictions) == [(None, None, None, "pixels")]
    v2 = {"outputs": [{"name": "provenance", "datatype": "BYTES", "shape": [1], "data": ["[]"]}]}
    assert _facts(parse_response(v2, b"").predictions) == [OLD_SERVER]


def test_analyse_request_keeps_a_record_for_every_image() -> None:
    gif = encode("GIF", (40, 40))
    infos = analyse_request(v1_request(JPEG, JPEG[: len(JPEG) // 2], gif, b""), ImageLimits(), keep_images=True)
    good, truncated, unsupported, empty = infos
    assert good.decode_error is None
    assert good.features is not None
    assert (good.features["width"], good.features["height"], good.features["format"]) == (64.0, 48.0, "JPEG")
    assert good.data == JPEG
    assert good.sha256 is not None
    assert truncated.features is None
    assert "truncated or corrupt" in (truncated.decode_error or "")
    assert "GIF images are not accepted" in (unsupported.decode_error or "")
    assert "empty" in (empty.decode_error or "")
    assert analyse_request(v1_request(JPEG), ImageLimits(), keep_images=False)[0].data is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-04T05:06:07Z", 1772600767.0),  # RFC 3339 UTC
        ("2026-03-04T06:06:07.5+01:00", 1772600767.5),  # an offset
        ("2026-03-04T05:06:07", 1772600767.0),  # no zone: UTC
        ("yesterday", None),  # not a time: the receipt time is used instead
    ],
)
def test_ce_time(value: str, expected: float | None) -> None:
    event = parse_event(ce_headers("t", **{"ce-time": value}), GOOD_REQUEST, received=9.0)
    assert event.time == expected


def test_event_survives_the_log_format() -> None:
    event = parse_event(ce_headers("r"), GOOD_REQUEST, received=12.5)
    assert Event.from_log(event.meta(), event.body) == event
