"""The real KServe ModelServer (`apd serve`) on loopback, called with plain HTTP, tritonclient (HTTP and gRPC) and
KServe's own REST client; a real (small, untrained) detector artifact, served from a folder and from the registry."""

import base64
import json
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from components.common.artifact import ArtifactConfig, export_onnx, write_artifact
from components.common.model import build_model
from components.common.model_config import ModelConfig
from components.common.protocol import OUTPUTS
from components.common.runtimes import ONNX_FILE
from components.common.settings import MlflowSettings
from components.common.transforms import Preprocessing
from tests.helpers.artifacts import detector, detector_artifact, package_artifact, register_artifact
from tests.helpers.images import encode, png_claiming
from tests.helpers.servers import MODEL, ModelServer

pytestmark = pytest.mark.integration


def _v1(*images: bytes) -> dict[str, object]:
    return {"instances": [{"image": {"b64": base64.b64encode(i).decode()}} for i in images]}


def _v2(*images: bytes) -> dict[str, object]:
    data = [base64.b64encode(i).decode() for i in images]
    return {"inputs": [{"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}]}


def _metric(model_server: ModelServer, name: str) -> float:
    """The sum of the server's /metrics samples whose line starts with ``name`` (a metric, or a metric and labels)."""
    text = model_server.call("GET", "/metrics")[1]
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


JPEG, PNG, WEBP = encode("JPEG", (300, 200)), encode("PNG", (120, 90)), encode("WEBP", (80, 80))
HIT, MISS = 'apd_cache_lookups_total{result="hit"}', 'apd_cache_lookups_total{result="miss"}'


def test_health_metadata_and_model_list(model_server: ModelServer) -> None:
    assert model_server.call("GET", "/v2/health/ready")[0] == 200
    assert model_server.call("GET", f"/v2/models/{MODEL}/ready")[0] == 200
    assert model_server.call("GET", "/v1/models")[1] == {"models": [MODEL]}
    assert model_server.call("GET", f"/v1/models/{MODEL}")[1]["ready"] is True
    metadata = model_server.call("GET", f"/v2/models/{MODEL}")[1]
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == list(OUTPUTS)  # checked in test_protocol


def test_v1_predicts_every_image_of_a_batch(model_server: ModelServer) -> None:
    status, body = model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(JPEG, PNG, WEBP))
    assert status == 200
    predictions = body["predictions"]
    assert len(predictions) == 3
    for p in predictions:
        assert 0 <= p["probability"] <= 1
        assert p["threshold"] == 0.5  # the test artifact's: the answer says which threshold made its label
        assert p["label"] == ("ai_generated" if p["probability"] >= p["threshold"] else "real")
        assert p["confidence"] in {"low", "medium", "high"}
        assert p["model_version"]
        assert p["inference_time_ms"] > 0 or p["cached"]  # the same images again: a lookup may round to 0.00 ms
        assert p["generator"] == {"name": "unknown", "probability": 0.0}  # a model without an attribution head


def test_v2_rest_json_matches_v1(model_server: ModelServer) -> None:
    v1 = model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(JPEG, PNG))[1]["predictions"]
    status, body = model_server.call("POST", f"/v2/models/{MODEL}/infer", {"id": "r1", **_v2(JPEG, PNG)})
    assert status == 200
    assert body["id"] == "r1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probability"]["datatype"] == "FP32"
    assert outputs["probability"]["data"] == pytest.approx([p["probability"] for p in v1], abs=1e-5)
    assert outputs["label"]["data"] == [p["label"] for p in v1]
    assert (outputs["generator"]["datatype"], outputs["generator"]["data"]) == ("BYTES", ["unknown", "unknown"])
    assert outputs["generator_probability"]["datatype"] == "FP32"
    assert outputs["generator_probability"]["data"] == [0.0, 0.0]
    # KServe 0.21 answers 500 to a request without an id unless the model sets one: ours does.
    assert model_server.call("POST", f"/v2/models/{MODEL}/infer", _v2(PNG))[0] == 200


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (_v1(b"not an image at all"), "not a recognised image"),  # not an image
        (_v1(encode("JPEG", (300, 200))[:900]), "truncated or corrupt"),  # truncated JPEG
        (_v1(b""), "empty (0 bytes)"),  # zero bytes
        (_v1(encode("GIF")), "GIF images are not accepted"),  # wrong format
        (_v1(encode("TIFF")), "TIFF images are not accepted"),  # wrong format
        (_v1(b'<svg xmlns="http://www.w3.org/2000/svg"/>'), "not a recognised image"),  # SVG
        (_v1(b"x" * (10 * 1024 * 1024 + 1)), "the limit is 10485760 bytes"),  # over the byte limit
        (_v1(png_claiming(50000, 50000)), "too many pixels"),  # decompression bomb
        ({"instances": [{"image": {"b64": "!!not base64!!"}}]}, "invalid base64"),  # invalid base64
        ({"instances": []}, "the batch is empty"),  # empty batch
        (_v1(*[PNG] * 33), "at most 32 per request"),  # batch over the limit
        ({"images": []}, '{"instances": [{"image": {"b64"'),  # wrong body shape
        ({"instances": ["abc"]}, "instances[0]: expected"),  # instance not an object
    ],
)
def test_v1_bad_input_is_a_400_that_says_why(model_server: ModelServer, body: object, says: str) -> None:
    status, answer = model_server.call("POST", f"/v1/models/{MODEL}:predict", body)
    assert status == 400, answer
    assert says in answer["error"]
    assert model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(PNG))[0] == 200  # still serving


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        ([{"name": "image", "shape": [1], "datatype": "FP32", "data": [1.0]}], "expected BYTES"),  # wrong datatype
        ([{"name": "image", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}], "expected [N] or [N, 1]"),
        ([{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["YQ=="]}], "declares 2 elements"),  # shape
        ([], "expected one input"),  # no input
    ],
)
def test_v2_bad_input_is_a_400_that_says_why(model_server: ModelServer, inputs: list[object], says: str) -> None:
    status, answer = model_server.call("POST", f"/v2/models/{MODEL}/infer", {"id": "x", "inputs": inputs})
    assert status == 400, answer
    assert says in answer["error"]


@pytest.mark.parametrize(
    ("header", "length", "says"),
    [
        (b"{not json", 9, "JSON header of the binary request is malformed"),  # broken header
        (
            b'{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",'
            b' "parameters": {"binary_data_size": 999}}]}',
            None,
            "does not fit",
        ),  # size past the body's end
        (b'{"inputs": [{"name": "image"}]}', None, "needs name, shape and datatype"),  # incomplete input
        (b"{}", 9999, "the body has"),  # header length past the body
    ],
)
def test_binary_extension_bad_requests_are_400(
    model_server: ModelServer, header: bytes, length: int | None, says: str
) -> None:
    request = urllib.request.Request(
        f"{model_server.url}/v2/models/{MODEL}/infer",
        data=header + b"\x00\x01raw",
        method="POST",
        headers={
            "Inference-Header-Content-Length": str(length or len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert says in json.loads(caught.value.read())["error"]


def test_malformed_json_and_unknown_model(model_server: ModelServer) -> None:
    assert model_server.call("POST", f"/v1/models/{MODEL}:predict", raw=b"{not json")[0] == 400
    assert model_server.call("POST", "/v1/models/nope:predict", _v1(PNG))[0] == 404
    assert model_server.call("POST", "/v2/models/nope/infer", _v2(PNG))[0] == 404


def test_metrics_move_when_requests_are_served(model_server: ModelServer) -> None:
    def sample(name: str) -> float:
        return _metric(model_server, name)

    before, invalid_before = sample("apd_predictions_total"), sample('apd_invalid_requests_total{reason="empty"}')
    model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(PNG, JPEG))
    model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(b""))
    assert sample("apd_predictions_total") == before + 2
    assert sample('apd_invalid_requests_total{reason="empty"}') == invalid_before + 1
    assert sample("apd_image_bytes_count") > 0
    assert sample("apd_preprocess_seconds_count") > 0


def _tritonclient(model_server: ModelServer, image: bytes, code: str, tmp_path: Path) -> Any:
    """What ``code`` prints last, read as JSON. It runs in a child process, because tritonclient.grpc cannot share one
    with kserve (duplicate protobuf symbols), after a preamble that gives it ``raw`` (the image's bytes), ``base64``,
    ``json``, ``np``, the modules ``http`` and ``grpc`` of tritonclient, and their clients ``h`` and ``g`` of the
    model server."""
    (tmp_path / "image").write_bytes(image)
    preamble = f"""
        import base64, json, numpy as np, tritonclient.http as http, tritonclient.grpc as grpc
        raw = open({str(tmp_path / "image")!r}, "rb").read()
        h = http.InferenceServerClient("127.0.0.1:{model_server.http}")
        g = grpc.InferenceServerClient("127.0.0.1:{model_server.grpc}")
        """
    script = textwrap.dedent(preamble) + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _grpc_outputs(model_server: ModelServer, image: bytes, names: tuple[str, ...], tmp_path: Path) -> dict[str, Any]:
    """The outputs ``names`` of one image scored over v2 gRPC: BYTES as text, numbers as float."""
    code = f"""
        i = grpc.InferInput("image", [1], "BYTES")
        i.set_data_from_numpy(np.array([raw], dtype=np.object_))
        r = g.infer("{MODEL}", [i], request_id="grpc")
        first = {{name: r.as_numpy(name)[0] for name in {names!r}}}
        print(json.dumps({{n: v.decode() if isinstance(v, bytes) else float(v) for n, v in first.items()}}))
        """
    outputs: dict[str, Any] = _tritonclient(model_server, image, code, tmp_path)
    return outputs


def test_tritonclient_http_and_grpc(model_server: ModelServer, tmp_path: Path) -> None:
    code = f"""
        i = http.InferInput("image", [1], "BYTES")
        i.set_data_from_numpy(np.array([base64.b64encode(raw)], dtype=np.object_), binary_data=False)
        r = h.infer("{MODEL}", [i], request_id="t1", headers={{"Content-Type": "application/json"}},
                    outputs=[http.InferRequestedOutput("probability", binary_data=False),
                             http.InferRequestedOutput("label", binary_data=False)])
        b = http.InferInput("image", [1], "BYTES")
        b.set_data_from_numpy(np.array([raw], dtype=np.object_), binary_data=True)  # the binary-data extension
        plain = [http.InferRequestedOutput("probability", binary_data=False)]
        rb = h.infer("{MODEL}", [b], request_id="t3", outputs=plain)
        gi = grpc.InferInput("image", [1], "BYTES")
        gi.set_data_from_numpy(np.array([raw], dtype=np.object_))
        gr = g.infer("{MODEL}", [gi], request_id="t2")
        print(json.dumps({{"http": float(r.as_numpy("probability")[0]), "grpc": float(gr.as_numpy("probability")[0]),
                          "binary": float(rb.as_numpy("probability")[0]),
                          "grpc_label": gr.as_numpy("label")[0].decode(), "ready": g.is_model_ready("{MODEL}")}}))
        """
    result = _tritonclient(model_server, JPEG, code, tmp_path)
    assert result["ready"] is True
    assert result["http"] == pytest.approx(result["grpc"], abs=1e-5)
    assert result["binary"] == pytest.approx(result["http"], abs=1e-5)  # raw bytes, no 500 from KServe
    assert result["grpc_label"] in {"real", "ai_generated"}


# fixture -> (label forced to ai_generated by the file's own declaration, C2PA state with the test CA trusted)
DECLARATIONS = {
    "c2pa_ai_jpeg": (True, "trusted"),
    "c2pa_composite_jpeg": (True, "trusted"),
    "c2pa_capture_jpeg": (False, "trusted"),
    "c2pa_tampered_jpeg": (True, "invalid"),
    "a1111_png": (True, "absent"),
    "comfyui_png": (True, "absent"),
    "a1111_webp_exif": (True, "absent"),
    "iptc_ai_jpeg": (True, "absent"),
    "camera_exif_jpeg": (False, "absent"),
    "truncated_jumbf_jpeg": (False, "unreadable"),
    "billion_laughs_jpeg": (False, "absent"),
}


def test_v1_answers_carry_provenance_and_a_declaration_decides_the_label(
    model_server: ModelServer, declared: dict[str, bytes]
) -> None:
    names = list(DECLARATIONS)
    status, body = model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(*(declared[n] for n in names)))
    assert status == 200
    for name, p in zip(names, body["predictions"], strict=True):
        ai_declared, c2pa = DECLARATIONS[name]
        assert (p["provenance"]["ai_declared"], p["provenance"]["c2pa"]) == (ai_declared, c2pa), name
        if ai_declared:
            assert (p["label"], p["verdict_source"], p["confidence"]) == ("ai_generated", "provenance", "high"), name
        else:  # capture claims and unreadable metadata never overrule the pixels
            assert p["verdict_source"] == "pixels", name
            assert p["label"] == ("ai_generated" if p["probability"] >= 0.5 else "real"), name
    by_name = dict(zip(names, body["predictions"], strict=True))
    assert by_name["c2pa_ai_jpeg"]["provenance"]["signals"][0]["generator"] == "DALL-E"
    assert by_name["billion_laughs_jpeg"]["provenance"]["unreadable"] == ["xmp"]


def test_hostile_metadata_never_turns_a_valid_image_into_an_error(
    model_server: ModelServer, declared: dict[str, bytes]
) -> None:
    status, body = model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(declared["giant_text_png"]))
    assert status == 200  # a 9 MB text chunk: the image is scored, the chunk reported unreadable
    assert body["predictions"][0]["provenance"]["unreadable"] == ["png_text"]


def test_v2_rest_provenance_output_is_the_v1_object_as_json(
    model_server: ModelServer, declared: dict[str, bytes]
) -> None:
    images = declared["c2pa_ai_png"], declared["plain_jpeg"]
    v1 = model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(*images))[1]["predictions"]
    status, body = model_server.call("POST", f"/v2/models/{MODEL}/infer", {"id": "p1", **_v2(*images)})
    assert status == 200
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["provenance"]["datatype"] == "BYTES"
    assert [json.loads(text) for text in outputs["provenance"]["data"]] == [p["provenance"] for p in v1]
    assert outputs["verdict_source"]["data"] == ["provenance", "pixels"]
    assert outputs["label"]["data"][0] == "ai_generated"


def test_v2_grpc_carries_provenance(model_server: ModelServer, declared: dict[str, bytes], tmp_path: Path) -> None:
    names = ("provenance", "verdict_source", "label")
    result = _grpc_outputs(model_server, declared["c2pa_ai_jpeg"], names, tmp_path)
    provenance = json.loads(result["provenance"])
    assert (provenance["ai_declared"], provenance["c2pa"]) == (True, "trusted")
    assert (result["verdict_source"], result["label"]) == ("provenance", "ai_generated")


def test_an_image_near_the_byte_limit_is_scored_over_grpc(model_server: ModelServer, tmp_path: Path) -> None:
    """KServe's default gRPC cap (8 MiB) refused a 9.4 MB image that REST scores; the server takes a full batch at
    the byte limit (serving/server.py)."""
    big = encode("PNG", (1780, 1760), seed=11)  # noise does not compress: about 9.4 MB, under the 10 MB limit
    assert 9_000_000 < len(big) < 10 * 1024 * 1024
    rest = model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(big))
    assert rest[0] == 200, rest[1]
    probability = _grpc_outputs(model_server, big, ("probability",), tmp_path)["probability"]
    assert probability == pytest.approx(rest[1]["predictions"][0]["probability"], abs=1e-5)


def test_provenance_metrics(model_server: ModelServer, declared: dict[str, bytes]) -> None:
    def sample(name: str) -> float:
        return _metric(model_server, name)

    trusted = 'apd_provenance_images_total{ai_declared="true",c2pa="trusted"}'
    before, timed, scored = sample(trusted), sample("apd_provenance_seconds_count"), sample(MISS)
    model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(declared["c2pa_ai_jpeg"], declared["plain_jpeg"]))
    assert sample(trusted) == before + 1  # every image answered, from the result cache or not
    # read only for the images scored (earlier tests sent these files: their answers may come from the cache)
    assert sample("apd_provenance_seconds_count") - timed == sample(MISS) - scored


def test_the_same_image_again_is_answered_from_the_result_cache(model_server: ModelServer) -> None:
    """The same bytes again: the stored answer without decoding, ``cached: true`` and the same verdict. The cache
    counters move by one hit and one miss; the prediction counters count both requests (a hit is an answer
    served), the decode and the provenance reader only the first."""
    image = encode("JPEG", (160, 120), seed=1501)  # no other test sends it: the first request is a miss
    counted = (HIT, MISS, "apd_predictions_total", "apd_probability_count", "apd_preprocess_seconds_count",
               "apd_provenance_seconds_count", "apd_image_bytes_count")  # fmt: skip
    before = {name: _metric(model_server, name) for name in counted}
    first, second = (
        model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(image))[1]["predictions"][0] for _ in range(2)
    )
    moved = {name: _metric(model_server, name) - before[name] for name in counted}
    assert (first["cached"], second["cached"]) == (False, True)
    assert {k: v for k, v in second.items() if k not in {"cached", "inference_time_ms"}} == {
        k: v for k, v in first.items() if k not in {"cached", "inference_time_ms"}
    }
    assert second["inference_time_ms"] < first["inference_time_ms"]
    assert moved == {
        HIT: 1,
        MISS: 1,
        "apd_predictions_total": 2,
        "apd_probability_count": 2,
        "apd_preprocess_seconds_count": 1,
        "apd_provenance_seconds_count": 1,
        "apd_image_bytes_count": 2,
    }
    assert _metric(model_server, "apd_cache_entries") >= 1
    # a batch keeps its order: a new image (a miss) before the stored one (a hit)
    other = encode("JPEG", (160, 120), seed=1502)
    both = model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(other, image))[1]["predictions"]
    assert [p["cached"] for p in both] == [False, True]
    assert both[1]["probability"] == first["probability"]


def test_v2_response_parameters_say_what_came_from_the_result_cache(model_server: ModelServer, tmp_path: Path) -> None:
    """``cached`` (every image of the request from the cache) and ``cached_count`` (how many), over REST and gRPC;
    the outputs are the same either way."""
    seen, fresh = encode("PNG", (96, 72), seed=1503), encode("PNG", (96, 72), seed=1504)
    assert model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(seen))[0] == 200  # stored
    status, body = model_server.call("POST", f"/v2/models/{MODEL}/infer", {"id": "c1", **_v2(fresh, seen)})
    assert status == 200, body
    assert body["parameters"] == {"cached": False, "cached_count": 1}  # a new image is a miss
    again = model_server.call("POST", f"/v2/models/{MODEL}/infer", {"id": "c2", **_v2(fresh, seen)})[1]
    assert again["parameters"] == {"cached": True, "cached_count": 2}
    assert again["outputs"] == body["outputs"]
    code = f"""
        i = grpc.InferInput("image", [1], "BYTES")
        i.set_data_from_numpy(np.array([raw], dtype=np.object_))
        r = g.infer("{MODEL}", [i], request_id="cached").get_response()
        print(json.dumps({{k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in r.parameters.items()}}))
        """
    assert _tritonclient(model_server, seen, code, tmp_path) == {"cached": True, "cached_count": 1}


def test_kserve_rest_client(model_server: ModelServer) -> None:
    import asyncio

    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def infer() -> np.ndarray:
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
        tensor = InferInput("image", [1], "BYTES", [base64.b64encode(PNG).decode()])
        response = await client.infer(
            model_server.url, InferRequest(MODEL, [tensor], request_id="k1"), model_name=MODEL
        )
        await client.close()
        return response.outputs[0].as_numpy()

    assert 0 <= float(asyncio.run(infer())[0]) <= 1


def test_registry_uri_and_a_broken_model(tmp_path: Path) -> None:
    """models:/NAME@champion is resolved through MLflow; an unloadable model leaves the server up but not ready."""
    tracking = MlflowSettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "art"))
    register_artifact(tracking, detector_artifact(tmp_path / "pkg" / "detector"), "apd-served")
    env = {"APD_MLFLOW__TRACKING_URI": tracking.tracking_uri}
    registry = ModelServer(tmp_path, "models:/apd-served@champion", env)
    try:
        status, body = registry.call("POST", f"/v1/models/{MODEL}:predict", _v1(PNG))
        assert status == 200
        assert body["predictions"][0]["model_version"] == "1"
        status, body = registry.call("POST", f"/v1/models/{MODEL}:explain", _v1(PNG))  # no explainer beside it
        assert status == 501, body
        assert "APD_SERVING__EXPLAINER_HOST" in body["error"]
    finally:
        registry.stop()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    bad = ModelServer(tmp_path, str(broken))
    try:
        assert bad.call("GET", "/v2/health/live")[0] == 200  # the process is up (KServe's server ready is too)
        assert bad.call("GET", f"/v2/models/{MODEL}/ready")[0] == 503  # the readiness probe to use
        assert bad.call("GET", f"/v1/models/{MODEL}")[0] == 503
        assert bad.call("POST", f"/v1/models/{MODEL}:predict", _v1(PNG))[0] == 503
        assert "model_load_failed" in Path(bad.log.name).read_text()
    finally:
        bad.stop()


def test_explain_returns_a_heatmap_png_of_the_image_size(model_server: ModelServer) -> None:
    """``:explain`` sent to `apd serve` is answered by `apd explain` beside it (APD_SERVING__EXPLAINER_HOST)."""
    import io

    from PIL import Image

    predicted = model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(JPEG))[1]["predictions"][0]
    status, body = model_server.call("POST", f"/v1/models/{MODEL}:explain", _v1(JPEG))
    assert status == 200
    [explanation] = body["explanations"]
    assert explanation["probability"] == pytest.approx(predicted["probability"], abs=1e-4)
    with Image.open(io.BytesIO(base64.b64decode(explanation["heatmap"]["b64"]))) as heatmap:
        assert heatmap.format == "PNG"
        assert heatmap.size == (300, 200)
    assert model_server.call("POST", f"/v1/models/{MODEL}:explain", _v1(b"nope"))[0] == 400


def _load(folder: Path, runtime: str, precision: str = "fp32") -> Any:
    from components.common.settings import ImageLimits, ServingSettings
    from serving.detector import DetectorModel

    settings = ServingSettings(model_uri=str(folder), runtime=runtime, precision=precision)  # type: ignore[arg-type]
    return DetectorModel(settings, ImageLimits())


def test_every_fp32_runtime_gives_the_same_probabilities(tmp_path: Path) -> None:
    folder = detector_artifact(tmp_path / "models")
    models = {runtime: _load(folder, runtime) for runtime in ("openvino", "onnxruntime", "torch")}
    assert all(m.load() for m in models.values())
    images = [JPEG, PNG, WEBP, encode("JPEG", (1600, 1200), seed=7)]
    scores = {runtime: m.score(images) for runtime, m in models.items()}
    assert np.abs(scores["openvino"] - scores["torch"]).max() < 1e-5
    assert np.abs(scores["onnxruntime"] - scores["torch"]).max() < 1e-5


def test_every_fp32_runtime_attributes_the_same_generator(tmp_path: Path) -> None:
    """An artifact with an attribution head: the same generator name and probability in every fp32 runtime."""
    model = detector(ModelConfig(preprocessing=Preprocessing(image_size=64), generators=("flux", "sdxl")))
    with torch.no_grad():
        assert model.attribution is not None
        model.attribution.weight.mul_(50)  # an untrained head is near-uniform: give it opinions
    folder = tmp_path / "models"
    package_artifact(model, folder, metrics={})
    images = [JPEG, PNG, WEBP, encode("JPEG", (1600, 1200), seed=7)]
    answers = {}
    for runtime in ("openvino", "onnxruntime", "torch"):
        served = _load(folder, runtime)
        assert served.load()
        answers[runtime] = served.detect(images)
        _, generator_probs = served.score_all(images)
        assert generator_probs.shape == (4, 2)
        assert generator_probs.sum(1) == pytest.approx(1.0, abs=1e-5)
    for runtime in ("openvino", "onnxruntime"):
        for got, expected in zip(answers[runtime], answers["torch"], strict=True):
            assert got.generator == expected.generator
            assert got.generator_probability == pytest.approx(expected.generator_probability, abs=1e-4)
    for d in answers["torch"]:
        assert d.generator_probability >= 0.5  # the top of two recipes
        assert d.generator in {"flux", "sdxl"}


def test_an_artifact_from_before_native_crops_serves_as_it_did(tmp_path: Path) -> None:
    """An artifact whose preprocessing has no mode (registered before native crops): draft-decoded, resized,
    centre-cropped, uncalibrated, exactly as the old server scored it."""
    from components.common.images import decode_image
    from components.common.model import load_checkpoint
    from components.common.settings import ImageLimits
    from components.common.transforms import image_crops

    torch.manual_seed(0)
    model = build_model(ModelConfig(preprocessing=Preprocessing(image_size=64, mode="resize", max_crops=1))).eval()
    old_prep = {k: v for k, v in model.config.preprocessing.to_dict().items() if k not in {"mode", "max_crops",
                                                                                        "crop_align"}}  # fmt: skip
    payload = {"format": 1, "model_config": {**model.config.to_dict(), "preprocessing": old_prep},
               "state_dict": model.state_dict(), "extra": {}}  # fmt: skip
    torch.save(payload, tmp_path / "model.pt")
    folder = tmp_path / "old"
    write_artifact(folder, tmp_path / "model.pt", ArtifactConfig(model.config, 0.5, "old"), {})
    config = json.loads((folder / "config.json").read_text())
    config["model"]["preprocessing"] = old_prep
    del config["temperature"]
    (folder / "config.json").write_text(json.dumps(config))
    export_onnx(model, folder / ONNX_FILE)
    loaded, _ = load_checkpoint(folder / "model.pt")
    assert loaded.config.preprocessing.mode == "resize"

    photo = encode("JPEG", (1600, 1200), seed=7)
    prep = loaded.config.preprocessing
    old_view = decode_image(photo, ImageLimits(), draft_size=prep.resize_size).image  # the old draft decoding
    with torch.inference_mode():
        expected = float(torch.sigmoid(model(torch.from_numpy(image_crops(old_view, prep))))[0])
    for runtime in ("torch", "openvino"):
        served = _load(folder, runtime)
        assert served.load()
        assert float(served.score([photo])[0]) == pytest.approx(expected, abs=1e-5)


def test_a_precision_loads_only_when_the_evaluation_enabled_it(tmp_path: Path) -> None:
    folder = detector_artifact(tmp_path / "models")
    # The artifact's config enables the fp32 variants only (what evaluate writes when bf16/int8 drift too far).
    assert not _load(folder, "openvino", "bf16").load()
    assert not _load(folder, "onnxruntime", "bf16").load()  # bf16 exists on OpenVINO only
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "variants": [*config["variants"], "openvino/bf16",
                                                                           "openvino/int8"]}))  # fmt: skip
    bf16 = _load(folder, "openvino", "bf16")
    assert bf16.load()
    fp32 = _load(folder, "openvino")
    assert fp32.load()
    images = [JPEG, PNG]
    assert np.abs(bf16.score(images) - fp32.score(images)).max() < 0.05  # bf16 keeps about 3 significant digits
    assert not _load(folder, "openvino", "int8").load()  # enabled, but this artifact has no model.int8.onnx


def test_a_grpc_tensor_whose_contents_do_not_fill_its_shape_is_invalid_argument(model_server: ModelServer) -> None:
    """KServe's own gRPC stubs (tritonclient checks the shape before sending, so it cannot send this)."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    tensor = pb.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[2])
    tensor.contents.bytes_contents.append(JPEG)
    with grpc.insecure_channel(f"127.0.0.1:{model_server.grpc}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(pb.ModelInferRequest(model_name=MODEL, inputs=[tensor]), timeout=60)
        tensor.shape[:] = [1]  # the same request with the shape it fills is answered
        answer = stub.ModelInfer(pb.ModelInferRequest(model_name=MODEL, inputs=[tensor]), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "input 'image' declares shape [2] but its contents do not fit it" in caught.value.details()
    assert [o.name for o in answer.outputs][:3] == ["probability", "label", "confidence"]


def test_the_log_carries_events_not_warnings(model_server: ModelServer) -> None:
    """A FastAPI deprecation (KServe's ORJSONResponse) was printed on every request: each image reset Python's
    memory of warnings already shown."""
    for _ in range(3):
        assert model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(JPEG, PNG))[0] == 200
        assert model_server.call("POST", f"/v2/models/{MODEL}/infer", _v2(WEBP))[0] == 200
    assert "Warning" not in model_server.log_text()


def test_several_worker_processes_serve_the_same_answers(model_server: ModelServer, tmp_path: Path) -> None:
    """--workers 2: KServe pickles the loaded model into each process; each opens its own inference engine."""
    single = model_server.call("POST", f"/v1/models/{MODEL}:predict", _v1(JPEG, PNG))[1]["predictions"]
    pair = ModelServer(tmp_path, str(detector_artifact(tmp_path / "models")), {"APD_SERVING__THREADS": "1"}, workers=2)
    try:
        for _ in range(4):  # requests spread over both processes
            status, body = pair.call("POST", f"/v1/models/{MODEL}:predict", _v1(JPEG, PNG))
            assert status == 200
            got = [p["probability"] for p in body["predictions"]]
            assert got == pytest.approx([p["probability"] for p in single], abs=1e-5)
    finally:
        pair.stop()


def test_a_failed_load_with_workers_answers_not_ready_and_says_why(tmp_path: Path) -> None:
    """--workers 2 and a precision this model version does not enable: the workers used to die at start, restarted
    by KServe forever, the port never answering."""
    env = {"APD_SERVING__RUNTIME": "openvino", "APD_SERVING__PRECISION": "int8", "APD_SERVING__THREADS": "1"}
    server = ModelServer(tmp_path, str(detector_artifact(tmp_path / "models")), env, workers=2, ready=False)
    try:
        status, body = server.call("GET", f"/v2/models/{MODEL}/ready")
        assert status == 503, body
        assert server.call("POST", f"/v1/models/{MODEL}:predict", _v1(JPEG))[0] == 503
        log = server.log_text()
        assert "model_load_failed" in log
        assert "inference variant openvino/int8 is not enabled for this model version" in log
    finally:
        server.stop()
