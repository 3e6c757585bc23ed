"""The detector's KServe contract (``components.common.protocol``): requests built from image bytes, answers written
as the server writes them and read back as the clients read them, for v1 and v2, older servers and malformed fields."""

import json
import subprocess
import sys
from dataclasses import fields, replace
from typing import Any, get_args, get_type_hints

import pytest

from components.common import protocol
from components.common.protocol import Answer
from components.common.provenance import Provenance, Signal
from components.common.settings import ServingSettings

DECLARED = Provenance("trusted", (Signal("c2pa", "ai", "DALL-E", "c2pa.created, trainedAlgorithmicMedia"),))
ANSWERS = [
    Answer(0.12, "ai_generated", "high", "3", 1.5, "unknown", 0.0, DECLARED, "provenance", 0.55, False),
    Answer(0.91, "ai_generated", "medium", "3", 1.5, "sdxl", 0.75, Provenance(), "pixels", 0.55, True),
]
DECLARED_DICT = {
    "ai_declared": True,
    "c2pa": "trusted",
    "signals": [
        {"kind": "c2pa", "declares": "ai", "generator": "DALL-E", "detail": "c2pa.created, trainedAlgorithmicMedia"}
    ],
    "unreadable": [],
}
NOTHING_DICT = {"ai_declared": False, "c2pa": "absent", "signals": [], "unreadable": []}


def test_the_contract_constants() -> None:
    assert (protocol.INPUT_NAME, protocol.INPUT_DATATYPE) == ("image", "BYTES")
    assert protocol.REQUIRED_OUTPUTS == ("probability", "label", "confidence")
    assert protocol.DEFAULT_MAX_BATCH == ServingSettings().max_batch == 32
    assert protocol.v1_request_example() == '{"instances": [{"image": {"b64": "<base64>"}}, ...]}'
    assert protocol.v2_request_example() == (
        '{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [N], "data": ["<base64>", ...]}]}'
    )


def test_the_v2_outputs_are_the_answer_fields_in_order() -> None:
    """Every Answer field but the response's model_version, v1's inference_time_ms and ``cached`` (a v2 response
    parameter, ``v2_parameters``: not an output, so that the outputs stay what the model computed), in the Answer's
    order; FP32 for the numbers, BYTES for text and the evidence object."""
    hints = get_type_hints(Answer)
    expected = tuple(
        (f.name, "FP32" if float in get_args(hints[f.name]) else "BYTES")
        for f in fields(Answer)
        if f.name not in {"model_version", "inference_time_ms", "cached"}
    )
    assert expected == protocol.OUTPUTS


def test_the_module_imports_without_kserve_or_tritonclient() -> None:
    """``apd predict`` imports it next to tritonclient.grpc, which cannot share a process with kserve."""
    code = "import sys, components.common.protocol; print(sorted({'kserve', 'tritonclient'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- requests ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        pytest.param(
            protocol.v1_request([b"a", b"bc"]),
            {"instances": [{"image": {"b64": "YQ=="}}, {"image": {"b64": "YmM="}}]},
            id="v1",
        ),
        pytest.param(
            protocol.v2_request([b"a", b"bc"], "r-1"),
            {"id": "r-1", "inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["YQ==", "YmM="]}]},
            id="v2-with-id",
        ),
        pytest.param(
            protocol.v2_request([b"a"]),
            {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["YQ=="]}]},
            id="v2-without-id",
        ),
    ],
)
def test_requests(built: dict[str, Any], expected: dict[str, Any]) -> None:
    assert json.dumps(built) == json.dumps(expected)  # the same keys in the same order


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        ({"image": {"b64": "YQ=="}}, {"b64": "YQ=="}),
        ({"image_bytes": {"b64": "YQ=="}}, {"b64": "YQ=="}),  # TF Serving's name
        ({"image": {"b64": "YQ=="}, "image_bytes": {"b64": "Yg=="}}, {"b64": "YQ=="}),  # image first
        ({"image": "YQ==", "image_bytes": {"b64": "Yg=="}}, None),  # image is there, but not an object
        ({"image": {"data": "YQ=="}}, None),
        ({"b64": "YQ=="}, None),
        ("YQ==", None),
        (None, None),
    ],
)
def test_the_image_field_of_a_v1_instance(instance: object, expected: dict[str, Any] | None) -> None:
    assert protocol.v1_image_field(instance) == expected


# ---- answers, server side -------------------------------------------------------------------------------------


def test_v1_predictions_in_wire_order() -> None:
    first, second = protocol.v1_predictions(ANSWERS)["predictions"]
    assert list(first) == [
        "probability",
        "threshold",
        "label",
        "confidence",
        "model_version",
        "inference_time_ms",
        "cached",
        "provenance",
        "verdict_source",
        "generator",
    ]
    assert first == {
        "probability": 0.12,
        "threshold": 0.55,
        "label": "ai_generated",
        "confidence": "high",
        "model_version": "3",
        "inference_time_ms": 1.5,
        "cached": False,
        "provenance": DECLARED_DICT,
        "verdict_source": "provenance",
        "generator": {"name": "unknown", "probability": 0.0},
    }
    assert (second["provenance"], second["generator"]) == (NOTHING_DICT, {"name": "sdxl", "probability": 0.75})
    assert second["cached"] is True


def test_v2_columns_in_output_order() -> None:
    columns = protocol.v2_columns(ANSWERS)
    assert list(columns) == list(protocol.OUTPUT_NAMES)
    assert columns == {
        "probability": [0.12, 0.91],
        "label": ["ai_generated", "ai_generated"],
        "confidence": ["high", "medium"],
        "generator": ["unknown", "sdxl"],
        "generator_probability": [0.0, 0.75],
        "provenance": [
            json.dumps(DECLARED_DICT, separators=(",", ":")),
            json.dumps(NOTHING_DICT, separators=(",", ":")),
        ],
        "verdict_source": ["provenance", "pixels"],
        "threshold": [0.55, 0.55],
    }


@pytest.mark.parametrize(
    ("cached", "parameters"),
    [
        ((False, False), {"cached": False, "cached_count": 0}),  # every image scored
        ((True, False), {"cached": False, "cached_count": 1}),  # some from the cache: ``cached`` is for all of them
        ((True, True), {"cached": True, "cached_count": 2}),  # every image from the cache
        ((), {"cached": False, "cached_count": 0}),  # no answers (the server never answers an empty batch)
    ],
)
def test_v2_parameters_say_what_came_from_the_cache(cached: tuple[bool, ...], parameters: dict[str, Any]) -> None:
    answers = [replace(ANSWERS[0], cached=c) for c in cached]
    assert protocol.v2_parameters(answers) == parameters


# ---- answers, client side -------------------------------------------------------------------------------------


def test_v1_round_trip_through_json() -> None:
    document = json.loads(json.dumps(protocol.v1_predictions(ANSWERS)))
    assert protocol.read_v1(document) == ANSWERS


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_v2_round_trip(binary: bool) -> None:
    """JSON data (BYTES as str) or the elements of binary tensors (BYTES as bytes); v2 has no inference time."""
    columns: dict[str, list[Any]] = json.loads(json.dumps(protocol.v2_columns(ANSWERS)))
    if binary:
        columns = {n: [v.encode() if isinstance(v, str) else v for v in vs] for n, vs in columns.items()}
    assert protocol.read_v2(columns, "3") == [replace(a, inference_time_ms=None, cached=None) for a in ANSWERS]


@pytest.mark.parametrize(
    ("parameters", "count", "cached"),
    [
        ({"cached": True, "cached_count": 2}, 2, True),  # all from the cache
        ({"cached": False, "cached_count": 0}, 2, False),  # none
        ({"cached": False, "cached_count": 1}, 2, None),  # one of two: which one, a parameter cannot say
        ({"cached": True}, 1, True),  # a client that sent only ``cached``
        ({"cached": "yes", "cached_count": "1"}, 1, None),  # values of the wrong type
        ({"cached_count": True}, 1, None),  # a bool is not a count
        ({}, 1, None),  # a server without a result cache
        (None, 1, None),  # a response without parameters
        ("cached", 1, None),  # parameters that are not an object
    ],
)
def test_v2_cached_is_read_from_the_response_parameters(parameters: Any, count: int, cached: bool | None) -> None:
    assert protocol.read_cached(parameters, count) is cached
    columns = {"probability": [0.5] * count}
    assert [a.cached for a in protocol.read_v2(columns, "3", parameters)] == [cached] * count


def test_an_older_server_without_provenance_attribution_or_cache() -> None:
    v1 = {"predictions": [{"probability": 0.2, "label": "real", "confidence": "high", "model_version": "1"}]}
    v2 = {"probability": [0.2], "label": ["real"], "confidence": ["high"]}
    expected = Answer(0.2, "real", "high", "1")
    assert protocol.read_v1(v1) == [replace(expected)]
    assert protocol.read_v2(v2, "1") == [expected]
    for answer in (*protocol.read_v1(v1), *protocol.read_v2(v2, "1")):
        assert (answer.generator, answer.generator_probability, answer.provenance, answer.verdict_source) == (None,) * 4
        assert answer.cached is None
        assert (answer.ai_declared, answer.c2pa, answer.provenance_generator) == (None, None, None)


def test_the_evidence_facts_of_an_answer() -> None:
    declared, nothing = protocol.read_v1(protocol.v1_predictions(ANSWERS))
    assert (declared.ai_declared, declared.c2pa, declared.provenance_generator) == (True, "trusted", "DALL-E")
    assert (nothing.ai_declared, nothing.c2pa, nothing.provenance_generator) == (False, "absent", None)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param('{"c2pa": "absent", "sig', id="truncated"),
        pytest.param("null", id="json-null"),
        pytest.param("[]", id="json-list"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param({"c2pa": "valid", "signals": 5}, id="signals-not-a-list"),
        pytest.param({"c2pa": "valid", "unreadable": 3}, id="unreadable-not-a-list"),
        pytest.param(["ai"], id="a-list"),
        pytest.param(7, id="a-number"),
    ],
)
def test_a_malformed_provenance_reads_as_none_and_keeps_the_rest(value: Any) -> None:
    assert protocol.read_provenance(value) is None
    v1 = {"predictions": [{"probability": 0.5, "label": "real", "provenance": value, "verdict_source": "pixels"}]}
    assert protocol.read_v1(v1) == [Answer(0.5, "real", None, None, verdict_source="pixels")]
    v2 = {"probability": [0.5], "provenance": [value], "verdict_source": [b"pixels"]}
    assert protocol.read_v2(v2, "7") == [Answer(0.5, None, None, "7", verdict_source="pixels")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (json.dumps(DECLARED_DICT), DECLARED),  # v2 JSON data
        (json.dumps(DECLARED_DICT).encode(), DECLARED),  # v2 binary element
        (DECLARED_DICT, DECLARED),  # v1 object
        ({"c2pa": "invalid"}, Provenance("invalid")),  # fields it lacks are left empty
        (None, None),
    ],
)
def test_read_provenance(value: Any, expected: Provenance | None) -> None:
    assert protocol.read_provenance(value) == expected


def test_v1_bare_scores_and_values_of_the_wrong_type() -> None:
    document = {
        "predictions": [
            0.25,
            "x",
            {
                "probability": "0.5",
                "label": 1,
                "confidence": None,
                "inference_time_ms": True,
                "generator": "sdxl",
                "cached": 1,
            },
        ]
    }
    assert protocol.read_v1(document) == [
        Answer(0.25, None, None, None),
        Answer(None, None, None, None),
        Answer(None, "1", None, None),  # a number where text belongs reads as its text; bool is no number nor 1 a bool
    ]
    assert protocol.read_v1({}) == []


def test_v2_columns_of_other_lengths_and_unknown_outputs() -> None:
    columns = {"probability": [0.5, 0.25], "label": [b"ai_generated"], "extra": [1, 2, 3]}
    assert protocol.read_v2(columns, None) == [Answer(0.5, "ai_generated", None, None), Answer(0.25, None, None, None)]
    assert protocol.read_v2({}) == []
