"""`apd ui` against the real `apd serve` on loopback: its proxy called with httpx (Starlette's TestClient), and the
page driven in a real headless Chromium over the Chrome DevTools protocol (websocket-client, no WebDriver)."""

import asyncio
import base64
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websocket
from PIL import Image
from skimage import data as photos
from starlette.testclient import TestClient

from components.common.settings import ImageLimits, UiSettings
from serving.auth import key_line
from serving.ui import PRIMARY, ModelServers, create_app
from tests.helpers.images import encode
from tests.helpers.net import free_port, wait_until_up
from tests.helpers.servers import MODEL, ModelServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VIEWPORT = (1280, 800)


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


COFFEE = Image.fromarray(photos.coffee())  # a real photograph, 600x400
PHOTO = _jpeg(COFFEE)
LARGE_SIZE = (3000, 2000)
_UPSCALED = np.asarray(COFFEE.resize(LARGE_SIZE, Image.Resampling.BICUBIC), dtype=np.int16)
_GRAIN = np.random.default_rng(0).integers(-64, 65, _UPSCALED.shape)  # sensor-like noise: a big file, 5 MB
# Over both of the page's former downscaling thresholds (2048 px, 4 MB), under the 10 MB limit: sent as it is.
LARGE_PHOTO = _jpeg(Image.fromarray(np.clip(_UPSCALED + _GRAIN, 0, 255).astype(np.uint8)), quality=95)
CORRUPT = PHOTO[: len(PHOTO) // 3]  # a truncated JPEG: right magic bytes, the rest missing
GIF = encode("GIF", (80, 60))
# Files that declare their origin (tests/helpers/provenance_files.py), uploaded under these names.
DECLARING = {"c2pa_ai_jpeg": "c2pa-ai.jpg", "c2pa_tampered_jpeg": "c2pa-edited-after-signing.jpg",
             "a1111_png": "a1111.png", "camera_exif_jpeg": "canon.jpg", "plain_jpeg": "plain.jpg",
             "billion_laughs_jpeg": "hostile-xmp.jpg"}  # fmt: skip


# ---- the backend proxy, in process (TestClient runs the app's lifespan: its real httpx client) ----


@pytest.fixture(scope="module")
def proxy(model_server: ModelServer) -> Iterator[TestClient]:
    """The page's backend with the real model server, and a compare server that is down (a closed port)."""
    settings = UiSettings(model_url=model_server.url, compare_url=f"http://127.0.0.1:{free_port()}", timeout=30)
    with TestClient(create_app(settings, ImageLimits())) as client:
        yield client


def test_models_lists_what_each_server_serves_and_the_limits(proxy: TestClient, model_server: ModelServer) -> None:
    answer = proxy.get("/api/models").json()
    primary, compare = answer["targets"]
    assert primary == {
        "target": "primary",
        "url": model_server.url,
        "default_model": MODEL,
        "models": [{"name": MODEL, "ready": True}],
        "error": None,
    }
    assert compare["models"] == []
    assert "cannot list the models at http://127.0.0.1:" in compare["error"]
    assert answer["defaults"] == {"model": MODEL, "compare": f"compare:{MODEL}"}
    assert answer["limits"]["max_bytes"] == 10 * 1024 * 1024
    assert answer["limits"]["formats"] == ["JPEG", "PNG", "WEBP"]


def test_predict_goes_through_v2_and_matches_the_server(proxy: TestClient, model_server: ModelServer) -> None:
    answer = proxy.post("/api/predict?compare=none", content=PHOTO, headers={"Content-Type": "image/jpeg"})
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    direct = model_server.call(
        "POST", f"/v1/models/{MODEL}:predict", {"instances": [{"image": {"b64": base64.b64encode(PHOTO).decode()}}]}
    )[1]["predictions"][0]
    assert result["probability"] == pytest.approx(direct["probability"], abs=1e-5)
    assert (result["label"], result["confidence"]) == (direct["label"], direct["confidence"])
    assert result["threshold"] == direct["threshold"] == 0.5  # the test artifact's
    assert direct["cached"] is True  # the page's request came first and stored the answer
    assert isinstance(result["cached"], bool)  # the page reads the v2 response parameter
    assert result["model_version"] == direct["model_version"] == "models-test"
    assert result["model_name"] == MODEL
    assert result["latency_ms"] > 0
    assert answer.json()["compare"] is None


def test_predict_carries_the_files_provenance_and_what_decided_the_label(
    proxy: TestClient, model_server: ModelServer, declared: dict[str, bytes]
) -> None:
    result = proxy.post("/api/predict?compare=none", content=declared["c2pa_ai_jpeg"]).json()["result"]
    evidence = result["provenance"]
    assert (evidence["ai_declared"], evidence["c2pa"], evidence["unreadable"]) == (True, "trusted", [])
    assert [(s["kind"], s["declares"], s["generator"]) for s in evidence["signals"]] == [("c2pa", "ai", "DALL-E")]
    assert (result["label"], result["confidence"], result["verdict_source"]) == ("ai_generated", "high", "provenance")
    assert 0 <= result["probability"] <= 1  # the pixel model's own, whatever the declaration

    plain = proxy.post("/api/predict?compare=none", content=declared["plain_jpeg"]).json()["result"]
    assert plain["provenance"] == {"ai_declared": False, "c2pa": "absent", "signals": [], "unreadable": []}
    assert plain["verdict_source"] == "pixels"
    assert plain["label"] == ("ai_generated" if plain["probability"] >= 0.5 else "real")

    # The compare server's answer gets the same treatment.
    settings = UiSettings(model_url=model_server.url, compare_url=model_server.url, timeout=30)
    with TestClient(create_app(settings, ImageLimits())) as both:
        body = both.post("/api/predict", content=declared["a1111_png"]).json()
    for answer in (body["result"], body["compare"]):
        assert answer["verdict_source"] == "provenance"
        assert answer["provenance"]["signals"][0]["generator"] == "Stable Diffusion web UI"
    assert body["compare"]["same_label"] is True


def _fake_older_server_answer(*extra: dict[str, Any]) -> httpx.Response:
    """A fake: the v2 answer of a model server from before provenance (no such server can run here), with ``extra``
    outputs."""
    outputs = [
        {"name": "probability", "shape": [1], "datatype": "FP32", "data": [0.25]},
        {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["real"]},
        {"name": "confidence", "shape": [1], "datatype": "BYTES", "data": ["medium"]},
        *extra,
    ]
    return httpx.Response(200, json={"model_name": MODEL, "model_version": "v0", "id": "1", "outputs": outputs})


@pytest.mark.parametrize(
    "extra",
    [
        (),  # a model server from before provenance: no such outputs
        ({"name": "provenance", "shape": [1], "datatype": "BYTES", "data": ["{not json"]},),  # broken: no evidence
    ],
    ids=["older-server", "unparsable-provenance"],
)
def test_a_server_without_provenance_outputs_reads_as_no_evidence(extra: tuple[dict[str, Any], ...]) -> None:
    async def score() -> dict[str, Any]:
        transport = httpx.MockTransport(lambda request: _fake_older_server_answer(*extra))
        async with httpx.AsyncClient(transport=transport) as client:
            return await ModelServers(UiSettings(model_url="http://older:8080"), client).predict(PRIMARY, MODEL, PHOTO)

    result = asyncio.run(score())
    assert (result["label"], result["probability"], result["model_version"]) == ("real", 0.25, "v0")
    assert (result["provenance"], result["verdict_source"]) == (None, "pixels")


def test_a_compare_server_that_is_down_does_not_hide_the_primary_verdict(proxy: TestClient) -> None:
    body = proxy.post("/api/predict", content=PHOTO).json()  # no compare parameter: the configured compare target
    assert body["result"]["label"] in {"ai_generated", "real"}
    assert body["compare"]["status"] == 502
    assert "cannot reach the model server at http://127.0.0.1:" in body["compare"]["error"]


def test_explain_returns_the_heatmap_of_the_image_size(proxy: TestClient) -> None:
    answer = proxy.post("/api/explain", content=PHOTO)
    assert answer.status_code == 200, answer.text
    heatmap = Image.open(io.BytesIO(base64.b64decode(answer.json()["heatmap_png_b64"])))
    assert (heatmap.format, heatmap.size) == ("PNG", COFFEE.size)


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/api/predict", GIF, 400, "GIF images are not accepted; accepted formats: JPEG, PNG, WEBP"),  # server's 400
        ("/api/predict", CORRUPT, 400, "the JPEG image is truncated or corrupt"),  # server's 400, passed through
        ("/api/explain", CORRUPT, 400, "the JPEG image is truncated or corrupt"),  # the same through :explain
        ("/api/predict", b"%PDF-1.7 not an image", 400, "the data is not a recognised image"),  # not an image
        ("/api/predict", b"", 400, "empty file: choose a JPEG, PNG or WebP image"),  # caught by the proxy
        ("/api/predict", b"\xff\xd8\xff" + b"x" * (14 * 1024 * 1024), 413, "file too large: 14 MB, the limit is 10 MB"),
        ("/api/predict?model=nope", PHOTO, 404, "model 'nope' is not served at http://127.0.0.1:"),  # unknown model
        ("/api/predict?model=../../metrics", PHOTO, 400, "invalid model name"),  # no path tricks through the proxy
        ("/api/predict?compare=canary:x", PHOTO, 400, "unknown server 'canary'"),  # only configured servers
        ("/api/explain?target=compare", PHOTO, 502, "cannot reach the model server"),  # server down: 502 saying so
    ],
)
def test_errors_come_back_in_plain_words(proxy: TestClient, path: str, body: bytes, status: int, says: str) -> None:
    answer = proxy.post(path, content=body)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]
    assert proxy.post("/api/predict?compare=none", content=PHOTO).status_code == 200  # both still serve


def test_page_is_served_from_this_origin_only(proxy: TestClient) -> None:
    page = proxy.get("/")
    assert page.status_code == 200
    assert "AI product photo check" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css"):
        assert proxy.get(f"/{asset}").status_code == 200
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN, nothing from elsewhere


# ---- the page in a real headless Chromium ----


class Ui:
    """`apd ui` in a subprocess on a free loopback port."""

    def __init__(self, tmp: Path, model_url: str, *flags: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / f"ui-{self.port}.log").open("w")
        command = [sys.executable, "-m", "components.cli", "ui", "--port", str(self.port), "--model-url", model_url]
        self.process = subprocess.Popen(
            [*command, *flags], stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        wait_until_up(self.process, Path(self.log.name), f"{self.url}/healthz", seconds=60, poll=0.3)

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The JSON log lines of ``event`` so far (the page's backend logs each check: bytes and their sha256)."""
        lines = Path(self.log.name).read_text().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in entries if e.get("event") == event]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


class Chromium:
    """Headless Chromium driven over the DevTools protocol: navigate, evaluate JS, set files, press keys, screenshot."""

    def __init__(self, tmp: Path) -> None:
        assert CHROMIUM is not None
        profile = tmp / "chromium-profile"
        # Flags: no sandbox (root), and none of Chromium's background connections, which this closed network refuses.
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--disable-dev-shm-usage", "--no-proxy-server", f"--user-data-dir={profile}",
                   "--remote-debugging-port=0", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
                   "about:blank"]  # fmt: skip
        self.log = (tmp / "chromium.log").open("w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert self.process.poll() is None, Path(self.log.name).read_text()
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.next_id = 0
        self.exceptions: list[str] = []  # uncaught exceptions of the page's scripts
        self.send("Runtime.enable")
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1],
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("method") == "Runtime.exceptionThrown":
                self.exceptions.append(json.dumps(message["params"]["exceptionDetails"])[:2000])
            if message.get("id") == self.next_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return dict(message["result"])

    def js(self, expression: str) -> Any:
        answer = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in answer, f"{expression}: {answer['exceptionDetails']}"
        return answer["result"].get("value")

    def wait(self, expression: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        body = self.js("document.body.innerText")
        raise AssertionError(f"timed out waiting for {expression}; the page says:\n{body}")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait(f"location.href === {json.dumps(url + '/')} && document.readyState === 'complete'")
        self.wait("!document.querySelector('#server-status').textContent.startsWith('Asking')")

    def choose_files(self, selector: str, *paths: Path) -> None:
        """What a person does in the file picker: the input gets the files and fires its change event."""
        node = self.send("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
        self.send("DOM.setFileInputFiles", files=[str(p) for p in paths], objectId=node["result"]["objectId"])

    def drop_files(self, selector: str, *paths: Path) -> None:
        """A real drag and drop of files from outside the page onto the element's centre."""
        box = self.js(f"JSON.stringify(document.querySelector({json.dumps(selector)}).getBoundingClientRect())")
        rect = json.loads(box)
        x, y = rect["x"] + rect["width"] / 2, rect["y"] + rect["height"] / 2
        data = {"items": [], "files": [str(p) for p in paths], "dragOperationsMask": 1}
        for kind in ("dragEnter", "dragOver", "drop"):
            self.send("Input.dispatchDragEvent", type=kind, x=x, y=y, data=data)

    def press_tab(self) -> None:
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key="Tab", code="Tab", windowsVirtualKeyCode=9)

    def screenshot(self, path: Path) -> Path:
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": VIEWPORT[0], "height": max(VIEWPORT[1], size["height"]), "scale": 1}
        shot = self.send("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        self.ws.close()
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium; make system-deps installs it)")
    running = Chromium(tmp_path_factory.mktemp("chromium"))
    yield running
    assert running.exceptions == [], "the page threw:\n" + "\n".join(running.exceptions)
    running.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, declared: dict[str, bytes]) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("upload")
    files = {"coffee.jpg": PHOTO, "large.jpg": LARGE_PHOTO, "corrupt.jpg": CORRUPT, "animation.gif": GIF,
             "huge.jpg": b"\xff\xd8\xff" + bytes(14 * 1024 * 1024)}  # fmt: skip
    files |= {upload: declared[fixture] for fixture, upload in DECLARING.items()}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in files}


@pytest.fixture(scope="module")
def ui(model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    running = Ui(tmp_path_factory.mktemp("ui"), model_server.url)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def compare_ui(model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """The compare view with the same server twice (as a canary beside its champion would be)."""
    running = Ui(tmp_path_factory.mktemp("ui-compare"), model_server.url, "--compare-url", model_server.url)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def keyed_ui(model_server: ModelServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ui, str]]:
    """The page with API keys on (one key, "moderator"), and that key."""
    tmp = tmp_path_factory.mktemp("ui-keys")
    key = secrets.token_urlsafe(24)
    (tmp / "keys").write_text(key_line("moderator", key) + "\n")
    running = Ui(tmp, model_server.url, env={"APD_AUTH__ENABLED": "true", "APD_AUTH__KEYS_FILE": str(tmp / "keys")})
    yield running, key
    running.stop()


def _cards(browser: Chromium) -> int:
    return int(browser.js("document.querySelectorAll('#results .card').length"))


def _field(browser: Chromium, name: str) -> str:
    """The text of data-field=NAME in the newest card ('' when absent)."""
    return str(browser.js(f"(document.querySelector('#results .card [data-field={name}]') || {{}}).textContent || ''"))


def _check(browser: Chromium, path: Path) -> None:
    """Choose one file and wait until its card shows a verdict or an error."""
    before = _cards(browser)
    browser.choose_files("#file", path)
    browser.wait(f"document.querySelectorAll('#results .card').length === {before + 1}")
    browser.wait("!document.querySelector('#results .card [data-field=state]')")


def test_a_jpeg_gets_a_verdict_and_its_grad_cam_overlay(
    browser: Chromium, ui: Ui, model_server: ModelServer, images: dict[str, Path]
) -> None:
    browser.open(ui.url)
    status = browser.js("document.querySelector('#server-status').textContent")
    assert status == f"primary server {model_server.url}: 1 model ready"
    _check(browser, images["coffee.jpg"])
    assert _field(browser, "error") == ""
    assert _field(browser, "label") in {"AI-generated", "Real photo"}
    assert _field(browser, "probability").endswith(" %")
    probability = float(_field(browser, "probability").removesuffix(" %"))
    gauge = browser.js("document.querySelector('#results .card .gauge').getAttribute('aria-valuenow')")
    assert float(gauge) == pytest.approx(probability, abs=0.1)
    assert _field(browser, "confidence") in {"low", "medium", "high"}
    assert _field(browser, "threshold") == "50.0 %: ai_generated from this probability on"
    assert _field(browser, "model-version") == f"{MODEL}, version models-test"
    assert "ms model server, " in _field(browser, "latency")

    overlay = "document.querySelector('#results .card img.overlay')"
    assert browser.js(f"{overlay}.hidden") is True
    browser.js("document.querySelector('#results .card [data-field=gradcam]').click()")
    browser.wait(f"!{overlay}.hidden && {overlay}.complete && {overlay}.naturalWidth > 0")
    assert browser.js(f"[{overlay}.naturalWidth, {overlay}.naturalHeight]") == list(COFFEE.size)
    assert browser.js(f"{overlay}.src.startsWith('data:image/png;base64,')")
    assert browser.js("document.querySelector('#results .card [data-field=gradcam]').getAttribute('aria-pressed')")
    browser.js("document.querySelector('#results .card [data-field=gradcam]').click()")  # toggles it off
    assert browser.js(f"{overlay}.hidden") is True


NO_METADATA = "No provenance metadata (absence proves nothing: metadata is easily stripped)."
PIXELS_SHOWN = "The pixel model's own probability is shown below."


@pytest.mark.parametrize(
    ("name", "label", "source", "says"),
    [
        ("a1111.png", "AI-generated", "provenance", [
            "Declared AI-generated by the file itself: generation settings written by Stable Diffusion web UI.",
            PIXELS_SHOWN]),
        ("c2pa-ai.jpg", "AI-generated", "provenance", [
            "Declared AI-generated by the file itself: C2PA Content Credentials (trusted signer: APD Test), made "
            "with DALL-E.", PIXELS_SHOWN]),
        ("c2pa-edited-after-signing.jpg", "AI-generated", "provenance", [
            "do not match the image (it was changed after signing); the AI claim in them is still counted"]),
        ("canon.jpg", None, "pixels", [
            "The file claims a camera capture (Canon EOS R5) in its EXIF; this is not verified and does not change "
            "the verdict."]),
        ("plain.jpg", None, "pixels", [NO_METADATA]),
        ("hostile-xmp.jpg", None, "pixels", ["Some metadata could not be read (XMP)"]),
    ],
)  # fmt: skip
def test_the_files_provenance_is_shown_in_plain_words(
    browser: Chromium, ui: Ui, images: dict[str, Path], name: str, label: str | None, source: str, says: list[str]
) -> None:
    browser.open(ui.url)
    _check(browser, images[name])
    assert _field(browser, "error") == ""
    evidence = _field(browser, "provenance")
    for sentence in says:
        assert sentence in evidence
    assert browser.js("document.querySelector('#results .card [data-field=provenance]').dataset.source") == source
    assert _field(browser, "label") == (label or ("AI-generated" if _probability(browser) >= 50 else "Real photo"))
    if source == "provenance":
        assert _field(browser, "confidence") == "high"
    assert (NO_METADATA in evidence) == (name == "plain.jpg")
    row = browser.js("document.querySelector('#history tbody tr').innerText")
    assert name in row
    assert ("file's declaration" if source == "provenance" else "pixels") in row


def _probability(browser: Chromium) -> float:
    return float(_field(browser, "probability").removesuffix(" %"))


def test_a_dropped_large_image_reaches_the_server_byte_identical(
    browser: Chromium, ui: Ui, images: dict[str, Path]
) -> None:
    """The detector reads native pixels: the page sends the file's own bytes, never resampled or re-encoded."""
    assert 4 * 1024 * 1024 < len(LARGE_PHOTO) < ImageLimits().max_bytes
    sha256 = hashlib.sha256(LARGE_PHOTO).hexdigest()
    browser.open(ui.url)
    browser.js("document.querySelector('#dropzone').scrollIntoView()")
    browser.drop_files("#dropzone", images["large.jpg"])  # dropped, not picked
    browser.wait("document.querySelectorAll('#results .card').length === 1")
    browser.wait("!document.querySelector('#results .card [data-field=state]')")
    assert _field(browser, "error") == ""
    assert _field(browser, "label") in {"AI-generated", "Real photo"}
    assert "ownscal" not in browser.js("document.querySelector('#results .card').textContent")
    scored = ui.logged("ui_predict")[-1]
    assert (scored["image_bytes"], scored["image_sha256"]) == (len(LARGE_PHOTO), sha256)

    # Grad-CAM gets the same bytes, and its heatmap has the image's native size.
    overlay = "document.querySelector('#results .card img.overlay')"
    browser.js("document.querySelector('#results .card [data-field=gradcam]').click()")
    browser.wait(f"!{overlay}.hidden && {overlay}.complete && {overlay}.naturalWidth > 0", timeout=120)
    assert browser.js(f"[{overlay}.naturalWidth, {overlay}.naturalHeight]") == list(LARGE_SIZE)
    explained = ui.logged("ui_explain")[-1]
    assert (explained["image_bytes"], explained["image_sha256"]) == (len(LARGE_PHOTO), sha256)


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("animation.gif", "not an image we accept: GIF is not accepted, send JPEG, PNG or WebP"),  # in the page
        ("corrupt.jpg", "the JPEG image is truncated or corrupt"),  # the model server's 400, passed through
        ("huge.jpg", "file too large: 14 MB, the limit is 10 MB"),  # checked in the page before upload
    ],
)
def test_bad_files_are_refused_in_plain_words(
    browser: Chromium, ui: Ui, images: dict[str, Path], name: str, says: str
) -> None:
    browser.open(ui.url)
    _check(browser, images[name])
    assert says in _field(browser, "error")
    assert _field(browser, "label") == ""


def test_compare_view_history_keyboard_and_layout(
    browser: Chromium, compare_ui: Ui, images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    browser.open(compare_ui.url)
    assert browser.js("document.querySelector('#compare').value") == f"compare:{MODEL}"
    _check(browser, images["coffee.jpg"])
    label = _field(browser, "label")
    assert _field(browser, "agreement") == f"Agree: both say {label}"
    assert "+0.0 points (0.0000)" in _field(browser, "difference")
    assert _field(browser, "compare-label") == label
    assert _field(browser, "compare-model") == f"{MODEL} models-test, compare server"
    assert _field(browser, "compare-probability") == _field(browser, "probability")
    assert _field(browser, "compare-source") == "pixels"  # a photo without provenance metadata

    # The session history keeps every check of this tab (and origin), newest first, across page loads.
    _check(browser, images["animation.gif"])
    browser.open(compare_ui.url)
    rows = browser.js("[...document.querySelectorAll('#history tbody tr')].map(r => r.innerText)")
    assert len(rows) == 2
    assert "animation.gif" in rows[0]
    assert "error: not an image we accept: GIF" in rows[0]
    assert "coffee.jpg" in rows[1]
    assert "agree" in rows[1]
    _check(browser, images["coffee.jpg"])  # a card to show in the screenshot, with its Grad-CAM overlay on
    browser.js("document.querySelector('#results .card [data-field=gradcam]').click()")
    browser.wait("document.querySelector('#results .card img.overlay').naturalWidth > 0")

    # Keyboard: Tab reaches the file picker, and its drop zone shows the focus.
    browser.js("document.activeElement.blur()")
    for _ in range(8):
        browser.press_tab()
        if browser.js("document.activeElement.id") == "file":
            break
    assert browser.js("document.activeElement.id") == "file"
    assert browser.js("getComputedStyle(document.querySelector('#dropzone')).outlineStyle") == "solid"
    assert browser.js("document.querySelector('label[for=file]').textContent").strip().startswith("Drop images here")

    # Nothing is wider than a 1280x800 screen.
    assert browser.js("document.documentElement.scrollWidth") <= VIEWPORT[0]
    shot = browser.screenshot(tmp_path_factory.mktemp("screenshots") / "apd-ui-compare.png")
    print(f"\nscreenshot of the page: {shot}")
    assert Image.open(shot).size[0] == VIEWPORT[0]


def _sign_in(browser: Chromium, key: str) -> None:
    """What a moderator does: type the key into the form and press its button."""
    browser.js("document.querySelector('#api-key').focus()")
    browser.send("Input.insertText", text=key)
    browser.js("document.querySelector('#login-form button[type=submit]').click()")


def test_with_keys_on_the_page_asks_for_one_and_keeps_it_in_memory_only(
    browser: Chromium, keyed_ui: tuple[Ui, str], model_server: ModelServer, images: dict[str, Path]
) -> None:
    ui, key = keyed_ui
    status = "document.querySelector('#server-status').textContent"
    browser.open(ui.url)
    assert browser.js("document.querySelector('#login').hidden") is False
    assert browser.js("document.activeElement.id") == "api-key"
    assert browser.js(status) == "This page needs an API key: sign in above."

    _sign_in(browser, "not-our-key")  # a wrong key: said so, and asked again
    browser.wait("!document.querySelector('#login-error').hidden")
    assert browser.js("document.querySelector('#login-error').textContent") == (
        "the API key is not valid (unknown or revoked)"
    )
    assert browser.js("document.querySelector('#login').hidden") is False

    _sign_in(browser, key)
    browser.wait("document.querySelector('#login').hidden")
    browser.wait(f"{status} === 'primary server {model_server.url}: 1 model ready'")
    _check(browser, images["coffee.jpg"])
    assert _field(browser, "error") == ""
    assert _field(browser, "label") in {"AI-generated", "Real photo"}
    stored = "JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage}) + document.cookie"
    assert key not in browser.js(stored)  # memory only
    assert browser.js("document.querySelector('#api-key').value") == ""  # not left in the form either
    assert not any(key in json.dumps(entry) for entry in ui.logged("ui_predict"))  # nor in the backend's log

    browser.open(ui.url)  # a reload forgets it
    assert browser.js("document.querySelector('#login').hidden") is False
    assert browser.js(status) == "This page needs an API key: sign in above."


def test_ui_env_settings_reach_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """APD_UI__* configure the page's backend like every other section."""
    from components.common.settings import Settings

    monkeypatch.setenv("APD_UI__COMPARE_URL", "http://canary:8080")
    monkeypatch.setenv("APD_UI__TIMEOUT", "5")
    ui = Settings().ui
    assert (ui.compare_url, ui.timeout, ui.model_name) == ("http://canary:8080", 5.0, MODEL)
