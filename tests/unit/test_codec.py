"""The v1 and v2 answers carry each image's provenance evidence and what decided its label."""

import json
import struct
from dataclasses import replace

import pytest
from kserve.protocol.infer_type import InferInput, InferRequest

from components.common.errors import InvalidRequestError
from components.common.protocol import Answer
from components.common.provenance import Provenance, Signal
from serving import codec

DECLARED = Provenance("trusted", (Signal("c2pa", "ai", "DALL-E", "c2pa.created, trainedAlgorithmicMedia"),))
DETECTIONS = [
    Answer(0.12, "ai_generated", "high", "3", 1.5, "unknown", 0.0, DECLARED, "provenance"),
    Answer(0.91, "ai_generated", "high", "3", 1.5, "sdxl", 0.7, Provenance(), "pixels"),
]


def test_v1_answer_has_the_provenance_object_and_the_verdict_source() -> None:
    first, second = codec.v1_response(DETECTIONS)["predictions"]
    assert first["provenance"] == {
        "ai_declared": True,
        "c2pa": "trusted",
        "signals": [
            {"kind": "c2pa", "declares": "ai", "generator": "DALL-E", "detail": "c2pa.created, trainedAlgorithmicMedia"}
        ],
        "unreadable": [],
    }
    assert (first["verdict_source"], first["probability"]) == ("provenance", 0.12)  # the pixels' probability stays
    assert second["provenance"]["ai_declared"] is False
    assert second["verdict_source"] == "pixels"
    json.dumps(first)  # plain JSON all the way down


@pytest.mark.parametrize("from_grpc", [False, True])  # REST JSON, gRPC (raw contents)
def test_v2_answer_has_provenance_json_and_verdict_source_outputs(from_grpc: bool) -> None:
    request = InferRequest(
        "apd-detector", [InferInput("image", [2], "BYTES", ["YQ==", "YQ=="])], "r", from_grpc=from_grpc
    )
    outputs = {o.name: o for o in codec.v2_response(request, DETECTIONS, "apd-detector", "3").outputs}
    assert (outputs["provenance"].datatype, list(outputs["provenance"].shape)) == ("BYTES", [2])
    texts = [v.decode() if isinstance(v, bytes) else v for v in outputs["provenance"].as_numpy()]
    assert [json.loads(t) for t in texts] == [DECLARED.to_dict(), Provenance().to_dict()]
    sources = [v.decode() if isinstance(v, bytes) else v for v in outputs["verdict_source"].as_numpy()]
    assert sources == ["provenance", "pixels"]


@pytest.mark.parametrize("from_grpc", [False, True])  # REST JSON, gRPC
def test_v2_response_parameters_say_what_came_from_the_result_cache(from_grpc: bool) -> None:
    """One value per response, on the wire in both: REST JSON and gRPC InferParameter (bool, int64)."""
    request = InferRequest(
        "apd-detector", [InferInput("image", [2], "BYTES", ["YQ==", "YQ=="])], "r", from_grpc=from_grpc
    )
    answers = [replace(DETECTIONS[0], cached=True), replace(DETECTIONS[1], cached=False)]
    response = codec.v2_response(request, answers, "apd-detector", "3")
    if from_grpc:
        parameters = response.to_grpc().parameters
        assert (parameters["cached"].bool_param, parameters["cached_count"].int64_param) == (False, 1)
    else:
        rest, _ = response.to_rest()
        assert isinstance(rest, dict)
        assert rest["parameters"] == {"cached": False, "cached_count": 1}


def _grpc_request(shape: list[int], *, raw: bytes | None = None, contents: list[bytes] | None = None) -> InferRequest:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=shape)
    if contents is not None:
        tensor.contents.bytes_contents.extend(contents)
    request = pb.ModelInferRequest(model_name="apd-detector", inputs=[tensor])
    if raw is not None:
        request.raw_input_contents.append(raw)
    return InferRequest.from_grpc(request)


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(_grpc_request([2], raw=struct.pack("<I", 3) + b"abc"), id="raw-short-of-shape"),
        pytest.param(_grpc_request([2], contents=[b"abc"]), id="bytes-contents-short-of-shape"),
        pytest.param(_grpc_request([1], raw=struct.pack("<I", 100) + b"abc"), id="raw-length-past-the-end"),
    ],
)
def test_a_grpc_shape_its_contents_do_not_fill_is_the_clients_error(request_: InferRequest) -> None:
    with pytest.raises(InvalidRequestError, match=r"input 'image' declares shape \[\d\] but its contents do not fit"):
        codec.images_from_v2(request_, max_batch=8)


def test_grpc_raw_and_bytes_contents_give_the_same_images() -> None:
    raw = b"".join(struct.pack("<I", len(image)) + image for image in (b"jpeg-1", b"png-22"))
    assert codec.images_from_v2(_grpc_request([2], raw=raw), 8) == [b"jpeg-1", b"png-22"]
    assert codec.images_from_v2(_grpc_request([2, 1], contents=[b"jpeg-1", b"png-22"]), 8) == [b"jpeg-1", b"png-22"]
