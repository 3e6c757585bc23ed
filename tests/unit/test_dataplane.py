"""The v2 binary-data extension as the server parses it (``serving.dataplane``): requests built by tritonclient's own
HTTP client code (``InferenceServerClient.generate_request_body``, what ``infer`` sends), raw image bytes kept as
they are, and a malformed request refused as invalid input with what is wrong. Over HTTP against the real server:
tests/integration/test_serving.py."""

import json
import re
import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from kserve.errors import InvalidInput
from kserve.model_repository import ModelRepository
from kserve.protocol.rest.v2_datamodels import InferenceRequest

from serving.dataplane import BinaryBytesDataPlane, parse_binary_request
from tests.helpers.events import bytes_tensor
from tests.helpers.images import encode

MODEL = "apd-detector"
JPEG, PNG = encode("JPEG", (64, 48), seed=1), encode("PNG", (40, 40), seed=2)
HEADER = "inference-header-content-length"  # how the client names it; KServe's INFERENCE_CONTENT_LENGTH_HEADER


def _images(*images: bytes, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=binary)
    return tensor


def _request(*inputs: triton.InferInput, **options: Any) -> tuple[bytes, int]:
    """The body and the JSON header's length, as tritonclient.http sends them."""
    body, json_length = triton.InferenceServerClient.generate_request_body(list(inputs), **options)
    return body, json_length or len(body)


def test_raw_images_stay_bytes() -> None:
    not_utf8 = b"\xff\xd8\xff\xe0 not UTF-8 \x80\x81"  # what KServe's own parser fails on with a 500
    body, length = _request(_images(JPEG, PNG, not_utf8), request_id="r1")
    request = parse_binary_request(body, length, MODEL)
    assert (request.id, request.model_name) == ("r1", MODEL)
    [tensor] = request.inputs
    assert (tensor.name, tensor.shape, tensor.datatype) == ("image", [3], "BYTES")
    assert tensor.data == [JPEG, PNG, not_utf8]
    assert all(type(item) is bytes for item in tensor.data)
    assert not tensor.parameters  # binary_data_size is the wire's business, not the model's


def test_numeric_json_and_binary_inputs_side_by_side_with_requested_outputs() -> None:
    scores = triton.InferInput("scores", [2, 2], "FP32")
    scores.set_data_from_numpy(np.array([[0.5, -1.0], [2.25, 0.0]], dtype=np.float32), binary_data=True)
    counts = triton.InferInput("counts", [3], "INT64")
    counts.set_data_from_numpy(np.array([1, -2, 3], dtype=np.int64), binary_data=False)  # JSON data
    outputs = [triton.InferRequestedOutput("probability", binary_data=False), triton.InferRequestedOutput("label")]
    body, length = _request(_images(PNG), scores, counts, outputs=outputs, parameters={"note": "x"})
    request = parse_binary_request(body, length, MODEL)
    images, floats, ints = request.inputs
    assert images.data == [PNG]
    assert (floats.datatype, floats.shape, floats.data) == ("FP32", [2, 2], [0.5, -1.0, 2.25, 0.0])
    assert (ints.datatype, ints.data) == ("INT64", [1, -2, 3])
    assert [o.name for o in request.request_outputs or []] == ["probability", "label"]
    assert request.parameters is not None
    assert request.parameters["note"] == "x"


def test_the_data_plane_parses_binary_requests_itself_and_leaves_json_to_kserve() -> None:
    plane = BinaryBytesDataPlane(ModelRepository())
    body, length = _request(_images(JPEG), request_id="b1")
    binary = plane.decode_inference_request(body, {HEADER: str(length)}, MODEL)
    assert binary.inputs[0].data == [JPEG]
    document = {"id": "j1", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}]}
    plain = plane.decode_inference_request(InferenceRequest(**document), {}, MODEL)
    assert (plain.id, plain.inputs[0].name, plain.inputs[0].data) == ("j1", "image", ["aGk="])


def _body(header: object, tail: bytes = b"") -> tuple[bytes, int]:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return text + tail, len(text)


IMAGE_SPEC = {"name": "image", "shape": [1], "datatype": "BYTES"}


@pytest.mark.parametrize(
    ("body", "length", "says"),
    [
        pytest.param(*_body(b"{not json"), "the JSON header of the binary request is malformed", id="not-json"),
        pytest.param(*_body([1, 2]), 'the JSON header must be an object with an "inputs" list', id="not-an-object"),
        pytest.param(
            *_body({"inputs": "image"}),
            'the JSON header must be an object with an "inputs" list',
            id="inputs-not-a-list",
        ),
        pytest.param(*_body({"inputs": [{"name": "image"}]}), "each input needs name, shape and datatype", id="bare"),
        pytest.param(*_body({"inputs": ["image"]}), "each input needs name, shape and datatype", id="input-a-string"),
        pytest.param(
            *_body({"inputs": [IMAGE_SPEC]}),
            "input 'image': binary_data_size None does not fit the 66-byte body",
            id="no-size",
        ),
        pytest.param(
            *_body({"inputs": [{**IMAGE_SPEC, "parameters": {"binary_data_size": "8"}}]}, bytes_tensor(b"abcd")),
            "input 'image': binary_data_size '8' does not fit",
            id="size-a-string",
        ),
        pytest.param(
            *_body({"inputs": [{**IMAGE_SPEC, "parameters": {"binary_data_size": 99}}]}, bytes_tensor(b"abcd")),
            "input 'image': binary_data_size 99 does not fit the ",
            id="size-past-the-end",
        ),
    ],
)
def test_a_malformed_request_is_invalid_input_that_says_why(body: bytes, length: int, says: str) -> None:
    with pytest.raises(InvalidInput, match=f"^{re.escape(says)}"):
        parse_binary_request(body, length, MODEL)


@pytest.mark.parametrize("length", [0, -1, 10_000])
def test_a_header_length_outside_the_body_is_invalid_input(length: int) -> None:
    body, _ = _request(_images(PNG))
    with pytest.raises(InvalidInput, match=f"{HEADER} is {length}; the body has {len(body)} bytes"):
        parse_binary_request(body, length, MODEL)


@pytest.mark.parametrize(
    "tensor",
    [
        pytest.param(struct.pack("<I", 50) + b"short", id="element-longer-than-the-tensor"),
        pytest.param(bytes_tensor(b"ab") + b"\x01", id="a-stray-byte-after-the-last-element"),
    ],
)
def test_a_tensor_whose_elements_do_not_add_up_is_invalid_input(tensor: bytes) -> None:
    body, length = _body({"inputs": [{**IMAGE_SPEC, "parameters": {"binary_data_size": len(tensor)}}]}, tensor)
    with pytest.raises(InvalidInput):
        parse_binary_request(body, length, MODEL)
