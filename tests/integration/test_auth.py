"""API keys on the real `apd serve` (KServe ModelServer, loopback): one table of callers (no key, a wrong key, the
right key, a revoked key) through v1 REST, v2 REST, v2 gRPC (KServe's own stubs, the key as metadata) and the web
page's proxy (`apd ui`'s app in process, in front of the guarded server); health and readiness open to anyone; the
rate limit (a burst, then 429 with Retry-After); keys added and revoked by editing the file, without a restart; the
same with `--workers 2` (the middleware is installed in every worker). The page's login in Chromium:
tests/integration/test_ui.py."""

import base64
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from starlette.testclient import TestClient

from components.common.settings import AuthSettings, ImageLimits, UiSettings
from serving.auth import key_line
from serving.ui import create_app
from tests.helpers.images import encode
from tests.helpers.servers import MODEL, ModelServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JPEG = encode("JPEG", (96, 64), seed=5)
RATE, BURST, RELOAD = 1.0, 5, 0.2  # the guarded server's settings: a small burst to reach, a fast reload
# One key per caller: each has its own rate-limit bucket, so the table's calls never limit one another.
NAMES = ("v1", "v2", "grpc", "page", "revoked", "limited", "added", "workers")
KEYS = {name: secrets.token_urlsafe(24) for name in NAMES}
GRPC_OPEN = ("ServerLive", "ServerReady", "ModelReady")


def _write_keys(path: Path, *names: str) -> None:
    path.write_text("# the test's API keys\n" + "".join(key_line(n, KEYS[n]) + "\n" for n in names))


def _auth_env(keys_file: Path) -> dict[str, str]:
    return {
        "APD_AUTH__ENABLED": "true",
        "APD_AUTH__KEYS_FILE": str(keys_file),
        "APD_AUTH__RELOAD_SECONDS": str(RELOAD),
        "APD_AUTH__RATE_PER_SECOND": str(RATE),
        "APD_AUTH__BURST": str(BURST),
    }


def _reloaded() -> None:
    time.sleep(RELOAD * 3)  # past the next look at the file (mtime resolution included)


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "keys"
    _write_keys(path, *(n for n in NAMES if n != "added"))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers.artifacts import detector_artifact  # torch: only when a test needs the server

    return detector_artifact(tmp_path_factory.mktemp("auth-model") / "mnt" / "models")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, keys_file: Path, model_dir: Path) -> Iterator[ModelServer]:
    """`apd serve` with API keys on; the key "revoked" worked, then its line was removed from the file."""
    server = ModelServer(tmp_path_factory.mktemp("auth-serve"), str(model_dir), _auth_env(keys_file))
    try:
        assert _rest(server, "v1", "revoked").status_code == 200
        _write_keys(keys_file, *(n for n in NAMES if n not in {"added", "revoked"}))
        _reloaded()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(guarded: ModelServer, keys_file: Path) -> Iterator[TestClient]:
    """The web page's backend with keys on (the same file), in front of the guarded model server."""
    auth = AuthSettings(enabled=True, keys_file=keys_file, reload_seconds=RELOAD, rate_per_second=RATE, burst=BURST)
    with TestClient(create_app(UiSettings(model_url=guarded.url, timeout=30), ImageLimits(), auth)) as client:
        yield client


def _headers(key: str | None) -> dict[str, str]:
    return {"X-API-Key": key} if key is not None else {}


def _rest(server: ModelServer, protocol: str, key_name: str | None, key: str | None = None) -> httpx.Response:
    """One v1 or v2 REST prediction of JPEG with the key of ``key_name`` (or ``key`` itself)."""
    key = key if key is not None else KEYS.get(key_name or "")
    b64 = base64.b64encode(JPEG).decode()
    if protocol == "v1":
        path, body = f"/v1/models/{MODEL}:predict", {"instances": [{"image": {"b64": b64}}]}
    else:
        path = f"/v2/models/{MODEL}/infer"
        body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}]}
    return httpx.post(server.url + path, json=body, headers=_headers(key), timeout=60)


def _grpc(server: ModelServer, method: str, key: str | None) -> grpc.StatusCode:
    """The status of one gRPC call; the key as metadata ``x-api-key``."""
    metadata = [("x-api-key", key)] if key is not None else []
    requests = {
        "ModelInfer": pb.ModelInferRequest(
            model_name=MODEL,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name="image", datatype="BYTES", shape=[1], contents=pb.InferTensorContents(bytes_contents=[JPEG])
                )
            ],
        ),
        "ModelMetadata": pb.ModelMetadataRequest(name=MODEL),
        "ServerLive": pb.ServerLiveRequest(),
        "ServerReady": pb.ServerReadyRequest(),
        "ModelReady": pb.ModelReadyRequest(name=MODEL),
    }
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc}") as channel:
        call = getattr(pb_grpc.GRPCInferenceServiceStub(channel), method)
        try:
            call(requests[method], metadata=metadata, timeout=60)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _scored(server: ModelServer) -> float:
    """Images the model has scored so far (its /metrics, open to anyone)."""
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("apd_predictions_total"))


# case -> (key presented, HTTP status, gRPC status)
CASES = {
    "no-key": (None, 401, grpc.StatusCode.UNAUTHENTICATED),
    "wrong-key": ("not-a-key-of-ours", 403, grpc.StatusCode.PERMISSION_DENIED),
    "revoked-key": ("revoked", 403, grpc.StatusCode.PERMISSION_DENIED),  # worked, then removed from the file
    "right-key": ("own", 200, grpc.StatusCode.OK),  # the protocol's own key
}


@pytest.mark.parametrize("protocol", ["v1", "v2", "grpc", "page"])
@pytest.mark.parametrize("case", list(CASES))
def test_who_may_call(guarded: ModelServer, page: TestClient, protocol: str, case: str) -> None:
    presented, status, grpc_status = CASES[case]
    key = KEYS[protocol] if presented == "own" else KEYS.get(presented or "", presented)
    before = _scored(guarded)
    if protocol == "grpc":
        assert _grpc(guarded, "ModelInfer", key) == grpc_status
    elif protocol == "page":
        answer = page.post("/api/predict?compare=none", content=JPEG, headers=_headers(key))
        assert answer.status_code == status, answer.text
        if status != 200:
            assert answer.json()["error"]  # plain words for the page
    else:
        answer = _rest(guarded, protocol, None, key)
        assert answer.status_code == status, answer.text
        if status == 401:
            assert answer.headers["www-authenticate"] == 'Bearer realm="apd"'
    if status != 200:
        assert _scored(guarded) == before  # a refused request never reaches the model


def test_health_readiness_and_metrics_stay_open(guarded: ModelServer, page: TestClient) -> None:
    for path in ("/", "/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready", f"/v1/models/{MODEL}"):
        assert httpx.get(guarded.url + path, timeout=30).status_code == 200, path
    assert "apd_auth_requests_total" in httpx.get(f"{guarded.url}/metrics", timeout=30).text
    for method in GRPC_OPEN:
        assert _grpc(guarded, method, None) == grpc.StatusCode.OK, method
    # Everything else needs a key, metadata included.
    assert httpx.get(f"{guarded.url}/v2/models/{MODEL}", timeout=30).status_code == 401
    assert httpx.get(f"{guarded.url}/v1/models", timeout=30).status_code == 401
    assert _grpc(guarded, "ModelMetadata", None) == grpc.StatusCode.UNAUTHENTICATED
    assert page.get("/healthz").status_code == 200
    assert page.get("/").status_code == 200  # the page itself, with its login form
    assert page.get("/api/models").status_code == 401
    assert 'apd_auth_requests_total{outcome="missing"}' in page.get("/metrics").text


def test_outcomes_are_counted_never_the_key(guarded: ModelServer) -> None:
    text = httpx.get(f"{guarded.url}/metrics", timeout=30).text
    counts = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("apd_auth_requests_total{")}  # fmt: skip
    assert set(counts) == {"ok", "missing", "invalid", "rate_limited"}
    assert counts["ok"] >= 1
    assert counts["missing"] >= 1
    assert not any(key in text for key in KEYS.values())


def test_a_key_over_its_rate_gets_429_with_retry_after(guarded: ModelServer) -> None:
    """A burst of BURST cheap calls (model metadata) is accepted, then the bucket is empty: 429 saying when."""
    url, headers = f"{guarded.url}/v2/models/{MODEL}", _headers(KEYS["limited"])
    with httpx.Client(timeout=30) as client:
        statuses = [client.get(url, headers=headers) for _ in range(BURST + 3)]
        assert [r.status_code for r in statuses[:BURST]] == [200] * BURST
        limited = statuses[-1]
        assert limited.status_code == 429, limited.text
        assert limited.headers["retry-after"] == "1"  # one token a second
        assert "rate limit of key 'limited' reached (1 requests/s, burst 5)" in limited.json()["error"]
        assert _grpc(guarded, "ModelMetadata", KEYS["limited"]) == grpc.StatusCode.RESOURCE_EXHAUSTED  # one bucket
        time.sleep(1.1)
        assert client.get(url, headers=headers).status_code == 200  # refilled
    assert "auth_rate_limited" in guarded.log_text()


def test_keys_are_added_and_revoked_by_editing_the_file(guarded: ModelServer, keys_file: Path) -> None:
    assert _rest(guarded, "v2", "added").status_code == 403
    kept = [n for n in NAMES if n != "revoked"]
    _write_keys(keys_file, *kept)
    _reloaded()
    assert _rest(guarded, "v2", "added").status_code == 200
    assert _grpc(guarded, "ModelInfer", KEYS["added"]) == grpc.StatusCode.OK
    _write_keys(keys_file, *(n for n in kept if n != "added"))
    _reloaded()
    assert _rest(guarded, "v2", "added").status_code == 403
    assert _grpc(guarded, "ModelInfer", KEYS["added"]) == grpc.StatusCode.PERMISSION_DENIED


def test_a_page_without_keys_passes_the_model_servers_refusal_through(guarded: ModelServer) -> None:
    """The page's login also works when only the model server checks keys: the server's 401 reaches the browser,
    and the key the browser then sends reaches the server."""
    with TestClient(create_app(UiSettings(model_url=guarded.url, timeout=30), ImageLimits())) as open_page:
        refused = open_page.get("/api/models")
        assert refused.status_code == 401
        assert "an API key is required" in refused.json()["error"]
        listed = open_page.get("/api/models", headers=_headers(KEYS["page"]))
        assert listed.status_code == 200, listed.text
        assert listed.json()["targets"][0]["models"] == [{"name": MODEL, "ready": True}]
        scored = open_page.post("/api/predict?compare=none", content=JPEG, headers=_headers(KEYS["page"]))
        assert scored.status_code == 200, scored.text


def test_every_rest_worker_checks_keys(tmp_path: Path, keys_file: Path, model_dir: Path) -> None:
    """With --workers 2 KServe builds the REST app in each spawned worker: the middleware is there too."""
    server = ModelServer(tmp_path, str(model_dir), _auth_env(keys_file), workers=2)
    try:
        with httpx.Client(timeout=60) as client:  # new connections: spread over both workers
            for _ in range(4):
                url = f"{server.url}/v2/models/{MODEL}"
                assert client.get(url, headers={"Connection": "close"}).status_code == 401
                ok = client.get(url, headers={"Connection": "close", **_headers(KEYS["workers"])})
                assert ok.status_code == 200, ok.text
        assert _grpc(server, "ModelInfer", None) == grpc.StatusCode.UNAUTHENTICATED  # gRPC: the main process
        assert server.log_text().count("auth_keys_loaded") >= 3  # the main process and each worker
    finally:
        server.stop()
