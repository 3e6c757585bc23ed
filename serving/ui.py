"""``apd ui``: the moderators' web page for manual checks, in front of the SERVED model.

    apd ui --port 8090 --model-url http://127.0.0.1:8080 [--compare-url http://canary:8080]

A static page (``serving/ui/``: HTML, vanilla JS, CSS; no CDN, no build step) and a thin proxy, so that the browser
talks to one origin. The proxy holds no model: it forwards to the model server's KServe API with httpx.

    GET  /api/models                      the models each configured server lists, the defaults, the image limits
    POST /api/predict?model=M&compare=T:M raw image body -> v2 REST ``/v2/models/M/infer`` (and the compare target)
    POST /api/explain?model=M             raw image body -> v1 ``/v1/models/M:explain`` (Grad-CAM heatmap PNG)
    GET  /healthz                         liveness of the page itself
    GET  /metrics                         the page's own metrics (apd_auth_requests_total)

With API keys on (``APD_AUTH__ENABLED``, serving/auth.py) every /api call needs a valid key (401, 403, 429 as in the
model server): the page asks for it once (a login form, the key kept in the tab's memory only) and sends it as
``X-API-Key``. The proxy passes the caller's ``X-API-Key`` and ``Authorization`` on to the model servers, which check
them again; a model server that refuses them answers the page's caller with its own 401/403/429, so the login also
works in front of a model server with keys on and a page without.

Each predict result carries the model server's provenance evidence (``provenance``: what the file declares about
its origin, parsed from the v2 output's JSON text; ``verdict_source``: ``pixels`` or ``provenance``); a model server
from before provenance answers without them, read as no evidence (``null``, ``pixels``).

Errors are JSON ``{"error": "..."}`` in plain words: the model server's 4xx message is passed through with its
status; an unreachable, failing or not-ready server is a 502, 504 or 503 that names the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog
from prometheus_client import exposition
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from components.common import protocol
from components.common.settings import AuthSettings, ImageLimits, UiSettings
from serving import metrics
from serving.auth import ApiKeyMiddleware, Guard

log = structlog.get_logger(__name__)

PAGE_DIR = Path(__file__).with_name("ui")
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a KServe model name; keeps URL paths safe
PRIMARY, COMPARE = "primary", "compare"
CREDENTIALS = ("x-api-key", "authorization")  # the request headers the proxy passes on to the model servers
REFUSALS = {401, 403, 429}  # a model server's answers to the caller's key, passed through as they are
# The page loads nothing from elsewhere: scripts, styles and images come from this origin (images also as
# data: and blob: URLs, the uploads and the Grad-CAM heatmaps).
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; object-src 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class ProxyError(Exception):
    """A request the page's backend answers with ``status`` and a message in plain words."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers


@dataclass(frozen=True)
class Target:
    """A model server the page can score with."""

    key: str  # primary | compare
    url: str  # base URL, without a trailing slash
    model: str  # default model name on it


def targets_of(settings: UiSettings) -> dict[str, Target]:
    """The primary server, and the compare server when ``compare_url`` or ``compare_model_name`` is set."""
    targets = {PRIMARY: Target(PRIMARY, settings.model_url.rstrip("/"), settings.model_name)}
    if settings.compare_url or settings.compare_model_name:
        url = (settings.compare_url or settings.model_url).rstrip("/")
        targets[COMPARE] = Target(COMPARE, url, settings.compare_model_name or settings.model_name)
    return targets


def megabytes(size: int) -> str:
    """``14 MB``, ``9.5 MB``: one decimal, none when whole."""
    return f"{size / 1024 / 1024:.1f}".removesuffix(".0") + " MB"


def too_large(size: int, limit: int, at_least: bool = False) -> str:
    """``file too large: 14 MB, the limit is 10 MB`` (in bytes when both round to the same megabytes)."""
    over = "over " if at_least else ""
    if megabytes(size) == megabytes(limit):
        return f"file too large: {over}{size} bytes, the limit is {limit} bytes ({megabytes(limit)})"
    return f"file too large: {over}{megabytes(size)}, the limit is {megabytes(limit)}"


def _error_text(response: httpx.Response) -> str:
    """The model server's own message: KServe answers ``{"error": "..."}``; anything else, its text, shortened."""
    return protocol.error_message(response.text) or response.text.strip()[:300] or response.reason_phrase


def _raise_refusal(response: httpx.Response) -> None:
    """A model server that refused the caller's key: its status, its words and its Retry-After, passed through."""
    if response.status_code in REFUSALS:
        retry = response.headers.get("retry-after")
        raise ProxyError(response.status_code, _error_text(response), {"Retry-After": retry} if retry else None)


def _credentials(request: Request) -> dict[str, str]:
    """The caller's API key and Authorization headers, for the model servers (which check them again)."""
    return {name: request.headers[name] for name in CREDENTIALS if name in request.headers}


@contextmanager
def _reading_answer(target: Target, lacking: str) -> Iterator[None]:
    """An answer that lacks what the page shows (a missing key, a wrong type) is a 502 that names the server."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ProxyError(502, f"the model server at {target.url} answered {lacking}: {exc!r}") from exc


def _log_check(event: str, result: dict[str, Any], model: str, image: bytes, **fields: Any) -> None:
    """One line per check: where it went, the result's ``fields``, and the exact bytes scored (the page never
    re-encodes)."""
    log.info(
        event,
        target=result["target"],
        model=model,
        **fields,
        latency_ms=result["latency_ms"],
        image_bytes=len(image),
        image_sha256=hashlib.sha256(image).hexdigest(),
    )


class ModelServers:
    """Forwards checks to the configured model servers (KServe v2 REST for scores, v1 ``:explain`` for Grad-CAM)."""

    def __init__(self, settings: UiSettings, client: httpx.AsyncClient) -> None:
        self.settings, self.client = settings, client
        self.targets = targets_of(settings)

    def target(self, key: str) -> Target:
        if key not in self.targets:
            raise ProxyError(400, f"unknown server {key!r}; configured: {', '.join(self.targets)}")
        return self.targets[key]

    async def _post(
        self, target: Target, model: str, path: str, body: dict[str, Any], credentials: dict[str, str]
    ) -> tuple[dict[str, Any], float]:
        """POST JSON to ``target`` with the caller's ``credentials``; (answer, round trip in ms). Raises ProxyError
        in plain words."""
        if not MODEL_NAME.match(model):
            raise ProxyError(400, f"invalid model name {model!r}: letters, digits, '.', '_' and '-' only")
        started = time.perf_counter()
        try:
            response = await self.client.post(
                f"{target.url}{path}", json=body, headers={"x-request-id": str(uuid.uuid4()), **credentials}
            )
        except httpx.TimeoutException as exc:
            raise ProxyError(
                504, f"the model server at {target.url} did not answer within {self.settings.timeout:g} s"
            ) from exc
        except httpx.HTTPError as exc:  # connection refused, reset, DNS ...
            raise ProxyError(502, f"cannot reach the model server at {target.url}: {exc}") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        status = response.status_code
        if status == 404:
            raise ProxyError(404, f"model {model!r} is not served at {target.url} ({_error_text(response)})")
        if status == 503:
            raise ProxyError(503, f"model {model!r} at {target.url} is not ready yet; try again in a moment")
        _raise_refusal(response)
        if 400 <= status < 500:  # the image or the request: the server's own words, with its status
            raise ProxyError(status, _error_text(response))
        if status != 200:
            raise ProxyError(502, f"the model server at {target.url} failed (HTTP {status}): {_error_text(response)}")
        try:
            answer = response.json()
        except ValueError as exc:
            raise ProxyError(502, f"the model server at {target.url} answered something that is not JSON") from exc
        return answer, latency_ms

    async def predict(
        self, key: str, model: str, image: bytes, credentials: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """One image scored through v2 REST: probability, the threshold of its label, label, confidence, model version,
        latency, and the provenance evidence with what decided the label (``verdict_source``)."""
        target = self.target(key)
        request = protocol.v2_request([image], str(uuid.uuid4()))
        answer, latency_ms = await self._post(target, model, f"/v2/models/{model}/infer", request, credentials or {})
        with _reading_answer(target, "without probability, label and confidence"):
            columns = {o["name"]: o["data"] for o in answer["outputs"]}
            found = protocol.read_v2(columns, parameters=answer.get("parameters"))[0]
            missing = [name for name in protocol.REQUIRED_OUTPUTS if getattr(found, name) is None]
            if missing:
                raise KeyError(missing[0])
            evidence = columns.get("provenance", [None])[0]
            if found.provenance is None and evidence is not None:  # the verdict still shows, without evidence
                log.warning("ui_provenance_unparsed", server=target.url, value=str(evidence)[:200])
            result = {
                "target": key,
                "server": target.url,
                "model_name": str(answer.get("model_name") or model),
                "model_version": str(answer.get("model_version") or "unknown"),
                "probability": found.probability,
                "threshold": found.threshold,  # None from a model server from before the threshold field
                "cached": found.cached,  # the server's result cache answered (None: a server without one)
                "label": found.label,
                "confidence": found.confidence,
                # None from a model server from before provenance (or with an unreadable evidence object)
                "provenance": found.provenance.to_dict() if found.provenance else None,
                "verdict_source": found.verdict_source or protocol.PIXELS,
                "latency_ms": round(latency_ms, 1),
            }
        _log_check(
            "ui_predict",
            result,
            model,
            image,
            model_version=result["model_version"],
            label=result["label"],
            verdict_source=result["verdict_source"],
        )
        return result

    async def explain(
        self, key: str, model: str, image: bytes, credentials: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Grad-CAM of one image through v1 ``:explain``: the heatmap PNG (base64) blended over the image."""
        target = self.target(key)
        request = protocol.v1_request([image])
        answer, latency_ms = await self._post(target, model, f"/v1/models/{model}:explain", request, credentials or {})
        with _reading_answer(target, ":explain without a heatmap"):
            explanation = answer["explanations"][0]
            result = {
                "target": key,
                "model_name": model,
                "model_version": str(answer.get("model_version") or "unknown"),
                "probability": float(explanation["probability"]),
                "heatmap_png_b64": str(explanation["heatmap"]["b64"]),
                "latency_ms": round(latency_ms, 1),
            }
        _log_check("ui_explain", result, model, image)
        return result

    async def models(self, target: Target, credentials: dict[str, str] | None = None) -> dict[str, Any]:
        """The models a server lists (KServe v1 ``/v1/models``) with their readiness, or why it cannot be asked; a
        refused key is the caller's to fix (ProxyError with the server's 401/403/429)."""
        entry: dict[str, Any] = {"target": target.key, "url": target.url, "default_model": target.model}
        try:
            listed = await self.client.get(f"{target.url}/v1/models", headers=credentials)
            _raise_refusal(listed)
            listed.raise_for_status()
            names = [n for n in listed.json().get("models", []) if isinstance(n, str) and MODEL_NAME.match(n)]
            states = await asyncio.gather(
                *(self.client.get(f"{target.url}/v1/models/{n}", headers=credentials) for n in names)
            )
            ready = [s.status_code == 200 and bool(s.json().get("ready")) for s in states]
        except (httpx.HTTPError, ValueError, AttributeError) as exc:  # down, or not a KServe model server
            entry.update(models=[], error=f"cannot list the models at {target.url}: {exc}")
            return entry
        entry.update(models=[{"name": n, "ready": r} for n, r in zip(names, ready, strict=True)], error=None)
        return entry


async def _read_image(request: Request, limit: int) -> bytes:
    """The raw request body, refused in plain words when empty or over the byte limit (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ProxyError(413, too_large(int(declared), limit))
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ProxyError(413, too_large(len(data), limit, at_least=True))
    if not data:
        raise ProxyError(400, "empty file: choose a JPEG, PNG or WebP image")
    return bytes(data)


def _servers(request: Request) -> ModelServers:
    servers: ModelServers = request.app.state.servers
    return servers


def _compare_choice(servers: ModelServers, value: str | None) -> tuple[str, str] | None:
    """``compare=TARGET:MODEL`` (``none`` or empty: no comparison); absent: the configured compare target."""
    if value is None:
        default = servers.targets.get(COMPARE)
        return (default.key, default.model) if default else None
    if value in {"", "none"}:
        return None
    key, _, model = value.partition(":")
    target = servers.target(key)  # 400 for a server that is not configured
    return key, model or target.model


async def predict(request: Request) -> JSONResponse:
    servers = _servers(request)
    image = await _read_image(request, request.app.state.limits.max_bytes)
    model = request.query_params.get("model") or servers.targets[PRIMARY].model
    choice = _compare_choice(servers, request.query_params.get("compare"))
    credentials = _credentials(request)
    if choice is None:
        return JSONResponse({"result": await servers.predict(PRIMARY, model, image, credentials), "compare": None})
    if choice == (PRIMARY, model):
        raise ProxyError(400, "the compare model is the model itself: choose another model or server")
    answers: tuple[dict[str, Any] | BaseException, ...] = await asyncio.gather(
        servers.predict(PRIMARY, model, image, credentials),
        servers.predict(*choice, image, credentials),
        return_exceptions=True,
    )
    first, second = answers
    if isinstance(first, BaseException):  # the image itself or the primary server: the whole check fails
        raise first
    compare: dict[str, Any]
    if isinstance(second, ProxyError):  # the canary may be down while the champion answers: show both facts
        compare = {"target": choice[0], "model_name": choice[1], "error": str(second), "status": second.status}
    elif isinstance(second, BaseException):
        raise second
    else:
        compare = {
            **second,
            "same_label": second["label"] == first["label"],
            "difference": round(second["probability"] - first["probability"], 6),
        }
    return JSONResponse({"result": first, "compare": compare})


async def explain(request: Request) -> JSONResponse:
    servers = _servers(request)
    image = await _read_image(request, request.app.state.limits.max_bytes)
    key = request.query_params.get("target") or PRIMARY
    model = request.query_params.get("model") or servers.target(key).model
    return JSONResponse(await servers.explain(key, model, image, _credentials(request)))


async def models(request: Request) -> JSONResponse:
    servers = _servers(request)
    limits: ImageLimits = request.app.state.limits
    credentials = _credentials(request)
    listed = await asyncio.gather(*(servers.models(t, credentials) for t in servers.targets.values()))
    compare = servers.targets.get(COMPARE)
    return JSONResponse(
        {
            "targets": listed,
            "defaults": {
                "model": servers.targets[PRIMARY].model,
                "compare": f"{compare.key}:{compare.model}" if compare else None,
            },
            "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels, "formats": limits.formats},
        }
    )


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def metrics_page(request: Request) -> Response:
    """The page's own registry (not the model server's): its API-key outcomes."""
    encoder, content_type = exposition.choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(metrics.UI_REGISTRY), headers={"content-type": content_type})


async def _proxy_error(request: Request, exc: Exception) -> JSONResponse:
    status = exc.status if isinstance(exc, ProxyError) else 500
    log.info("ui_refused", path=request.url.path, status=status, error=str(exc))
    headers = exc.headers if isinstance(exc, ProxyError) else None
    return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response (the CSP keeps the page to its own origin)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(settings: UiSettings, limits: ImageLimits, auth: AuthSettings | None = None) -> Starlette:
    """The page and its API; one httpx client (connection pool) for the app's lifetime. With ``auth`` enabled,
    every /api call needs a valid key within its rate (serving/auth.py)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=settings.timeout) as client:
            app.state.servers = ModelServers(settings, client)
            app.state.limits = limits
            yield

    routes = [
        Route("/api/models", models, methods=["GET"]),
        Route("/api/predict", predict, methods=["POST"]),
        Route("/api/explain", explain, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_page, methods=["GET"]),
        Mount("/", StaticFiles(directory=PAGE_DIR, html=True), name="page"),
    ]
    middleware = [Middleware(SecurityHeaders)]
    if auth is not None and auth.enabled:
        guard = Guard(auth, counter=metrics.UI_AUTH_REQUESTS)
        middleware.append(Middleware(ApiKeyMiddleware, guard=guard, needs_key=lambda path: path.startswith("/api/")))
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={ProxyError: _proxy_error},
    )


def run_ui(settings: UiSettings, limits: ImageLimits, host: str, port: int, auth: AuthSettings | None = None) -> None:
    """Serve the page until SIGINT/SIGTERM (uvicorn; logs through the structlog setup of the entrypoint)."""
    import uvicorn

    targets = {f"{key}_server": f"{t.url} ({t.model})" for key, t in targets_of(settings).items()}
    log.info("ui_starting", host=host, port=port, api_keys=bool(auth and auth.enabled), **targets)
    uvicorn.run(create_app(settings, limits, auth), host=host, port=port, log_config=None, access_log=False)
