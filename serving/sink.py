"""``apd sink``: the payload sink. KServe's payload logger (``spec.predictor.logger: {mode: all, url: ...}``) posts
every inference request and response to it as a binary-mode CloudEvent; the sink pairs them and writes one record
per image (its features and its prediction) to S3 as Parquet, for the drift job.

    apd sink --port 8080        POST / (events), GET /healthz, GET /metrics

KServe 0.21 sends (``pkg/logger``): ``ce-id`` (the same for a request and its response), ``ce-type``
(``org.kubeflow.serving.inference.request`` / ``.response``), ``ce-source``, ``ce-specversion`` 1.0, ``ce-time``,
``ce-inferenceservicename``, ``ce-namespace``, ``ce-endpoint`` (e.g. ``default``/``canary``), ``ce-component``,
``ce-metadata``; the body is the inference request or response as sent, with the request's Content-Type. It logs a
response only when the server answered 200, and does not resend an event the sink refused.

An event is answered 200 only once it is fsynced to the write-ahead log (``serving/sink_store.py``); a background
task decodes the images (a process pool), pairs request and response by ce-id and hands records to the S3 writer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import os
import struct
import time
from collections.abc import Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing import get_context
from typing import Any, NamedTuple

import structlog

from components.common.errors import DetectorError, InvalidImageError
from components.common.features import image_features
from components.common.images import decode_image
from components.common.settings import ImageLimits, S3Settings, Settings, SinkSettings
from serving import metrics
from serving.sink_store import (
    FEATURE_COLUMNS,
    Partition,
    RecordStore,
    WalRef,
    WalUnavailableError,
    WriteAheadLog,
    WrittenIds,
)

log = structlog.get_logger(__name__)

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
KINDS = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}
ACCEPTED = (
    f"binary-mode CloudEvents from KServe's payload logger: headers ce-id and ce-type ({REQUEST_TYPE} or "
    f"{RESPONSE_TYPE}), the inference request or response JSON as the body"
)
V1_REQUEST = '{"instances": [{"image": {"b64": "<base64>"}}, ...]}'
V2_REQUEST = '{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [N], "data": ["<base64>", ...]}]}'
V1_RESPONSE = '{"predictions": [{"probability": p, "label": "...", "confidence": "...", "model_version": "..."}]}'
V2_RESPONSE = '{"model_name": "...", "model_version": "...", "outputs": [{"name": "probability", "data": [...]}, ...]}'
DRAFT_SIZE = 256  # JPEG draft decoding: features are measured on at most 256 px anyway
_MEMORY_BACKLOG = 2000  # events waiting for analysis beyond this are read back from the log, not kept in memory
_JSON = json.JSONDecoder()


class SinkEventError(DetectorError):
    """An event the sink cannot take: says what was wrong and what is accepted. ``reason`` labels the metric."""

    def __init__(self, message: str, reason: str, status: int = 400) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Event:
    """One CloudEvent: the request or the response of one inference call."""

    id: str
    kind: str  # request | response
    inference_service: str
    namespace: str
    endpoint: str
    component: str
    source: str
    time: float | None  # ce-time, seconds since the epoch
    received: float
    content_type: str
    body: bytes = field(repr=False, default=b"")

    @property
    def pair_key(self) -> str:
        return f"{self.namespace}|{self.inference_service}|{self.id}"

    @property
    def key(self) -> str:
        """What makes an event a duplicate: the same ce-id and type (of the same InferenceService)."""
        return f"{self.kind}|{self.pair_key}"

    def meta(self) -> bytes:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "body"}).encode()

    @classmethod
    def from_log(cls, meta: bytes, body: bytes) -> Event:
        return cls(**json.loads(meta), body=body)


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def parse_event(headers: Mapping[str, str], body: bytes, received: float) -> Event:
    """A binary-mode CloudEvent (``headers`` lower-case) -> ``Event``, its body checked to be a v1/v2 shape.

    Raises:
        SinkEventError: structured mode, ce-id or ce-type missing, unknown type or spec version, a body that is not
            JSON or not a v1/v2 request or response.
    """
    if headers.get("content-type", "").startswith("application/cloudevents"):
        raise SinkEventError(f"structured-mode CloudEvents are not accepted; send {ACCEPTED}", "structured_mode", 415)
    missing = [name for name in ("ce-id", "ce-type") if not headers.get(name)]
    if missing:
        raise SinkEventError(
            f"not a CloudEvent: no {' or '.join(missing)} header; the sink takes {ACCEPTED}", "not_a_cloudevent"
        )
    version = headers.get("ce-specversion", "1.0")
    if not version.startswith("1."):
        raise SinkEventError(
            f"CloudEvents spec version {version} is not supported; send 1.0", "unsupported_specversion"
        )
    kind = KINDS.get(headers["ce-type"])
    if kind is None:
        raise SinkEventError(f"unknown ce-type {headers['ce-type']!r}; the sink takes {ACCEPTED}", "unknown_type")
    document, tail = load_body(body)
    check_shape(kind, document, tail)
    return Event(
        id=headers["ce-id"],
        kind=kind,
        inference_service=headers.get("ce-inferenceservicename", ""),
        namespace=headers.get("ce-namespace", ""),
        endpoint=headers.get("ce-endpoint", ""),
        component=headers.get("ce-component", ""),
        source=headers.get("ce-source", ""),
        time=_parse_time(headers.get("ce-time")),
        received=received,
        content_type=headers.get("content-type", ""),
        body=body,
    )


def load_body(body: bytes) -> tuple[Any, bytes]:
    """The JSON document of a body and the bytes after it (the v2 binary-data extension puts tensors there)."""
    try:
        return json.loads(body), b""
    except (UnicodeDecodeError, json.JSONDecodeError):
        text = body.decode("utf-8", "surrogateescape")
        try:
            document, end = _JSON.raw_decode(text)
        except json.JSONDecodeError as exc:
            raise SinkEventError(
                f"the body is not JSON ({exc.msg} at byte {exc.pos}); expected a v1 or v2 inference request or "
                "response (JSON, optionally followed by v2 binary data)",
                "invalid_json",
            ) from exc
        return document, body[len(text[:end].encode("utf-8", "surrogateescape")) :]


def _binary_offsets(tensors: list[Any]) -> dict[int, tuple[int, int]]:
    """Tensor index -> (start, end) in the binary part, for tensors with ``parameters.binary_data_size``."""
    offsets, position = {}, 0
    for index, tensor in enumerate(tensors):
        size = (tensor.get("parameters") or {}).get("binary_data_size") if isinstance(tensor, dict) else None
        if isinstance(size, int) and size >= 0:
            offsets[index] = (position, position + size)
            position += size
    return offsets


def check_shape(kind: str, document: Any, tail: bytes) -> None:
    """Raises ``SinkEventError`` unless ``document`` is a non-empty v1 or v2 request/response."""
    if kind == "request":
        names, expected = ("instances", "inputs"), f"a v1 request {V1_REQUEST} or a v2 request {V2_REQUEST}"
    else:
        names, expected = ("predictions", "outputs"), f"a v1 response {V1_RESPONSE} or a v2 response {V2_RESPONSE}"
    items = next((document[n] for n in names if isinstance(document, dict) and n in document), None)
    if not isinstance(items, list) or not items:
        got = f"an object with keys {sorted(document)[:8]}" if isinstance(document, dict) else type(document).__name__
        raise SinkEventError(f"the {kind} body is {got}; expected {expected}", f"invalid_{kind}")
    binary = _binary_offsets(items) if names[1] in document else {}
    declared = max((end for _, end in binary.values()), default=0)
    if len(tail) != declared:
        raise SinkEventError(
            f"the body holds {len(tail)} bytes after its JSON but declares {declared} (binary_data_size); "
            "send plain JSON or the v2 binary-data extension",
            "invalid_json",
        )


def _b64(value: Any, where: str) -> bytes | str:
    if not isinstance(value, str):
        return f"{where}: expected a base64 string, got {type(value).__name__}"
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        return f"{where}: invalid base64 ({exc})"


def _split_bytes(data: bytes) -> list[bytes]:
    """v2 binary BYTES tensor: each element is a little-endian uint32 length, then the bytes."""
    elements, position = [], 0
    while position + 4 <= len(data):
        (length,) = struct.unpack_from("<I", data, position)
        elements.append(data[position + 4 : position + 4 + length])
        position += 4 + length
    return elements


def _tensor_values(tensors: list[Any], index: int, tail: bytes) -> list[Any]:
    tensor = tensors[index]
    span = _binary_offsets(tensors).get(index)
    if span is not None:
        raw = tail[span[0] : span[1]]
        if tensor.get("datatype") == "BYTES":
            return _split_bytes(raw)
        if tensor.get("datatype") == "FP32":
            return list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4]))
        return []
    data = tensor.get("data")
    if not isinstance(data, list):
        return []
    return [v for item in data for v in (item if isinstance(item, list) else [item])]  # [N] or [N, 1]


def request_images(document: dict[str, Any], tail: bytes) -> list[bytes | str]:
    """The image bytes of a checked request, one per image; a str says why that element holds no image."""
    if "instances" in document:
        images: list[bytes | str] = []
        for index, instance in enumerate(document["instances"]):
            image = instance.get("image", instance.get("image_bytes")) if isinstance(instance, dict) else None
            where = f"instances[{index}].image.b64"
            images.append(_b64(image["b64"], where) if isinstance(image, dict) and "b64" in image else f"no {where}")
        return images
    tensors = document["inputs"]
    names = [t.get("name") if isinstance(t, dict) else None for t in tensors]
    index = names.index("image") if "image" in names else 0
    tensor = tensors[index]
    if not isinstance(tensor, dict) or tensor.get("datatype") != "BYTES":
        datatype = tensor.get("datatype") if isinstance(tensor, dict) else type(tensor).__name__
        return [f"input {names[index]!r} has datatype {datatype}; expected BYTES (encoded images)"]
    values = _tensor_values(tensors, index, tail)
    if not values:
        return [f"input {names[index]!r} holds no data"]
    where = f"{names[index]}"
    return [v if isinstance(v, bytes) else _b64(v, f"{where}[{i}]") for i, v in enumerate(values)]


class Prediction(NamedTuple):
    probability: float | None
    label: str | None
    confidence: str | None
    model_version: str | None


@dataclass(frozen=True)
class ParsedResponse:
    model_name: str | None
    model_version: str | None
    predictions: list[Prediction]


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else (None if value is None else str(value))


def parse_response(document: dict[str, Any], tail: bytes) -> ParsedResponse:
    """The predictions of a checked v1 or v2 response (fields it lacks are None)."""
    if "predictions" in document:
        predictions = []
        for item in document["predictions"]:
            if isinstance(item, dict):
                fields = (item.get("probability"), item.get("label"), item.get("confidence"), item.get("model_version"))
                predictions.append(Prediction(_float(fields[0]), _text(fields[1]), _text(fields[2]), _text(fields[3])))
            else:  # a bare score
                predictions.append(Prediction(_float(item), None, None, None))
        version = next((p.model_version for p in predictions if p.model_version), None)
        return ParsedResponse(_text(document.get("model_name")), version, predictions)
    tensors = document["outputs"]
    by_name = {t.get("name"): i for i, t in enumerate(tensors) if isinstance(t, dict)}
    columns = {
        n: _tensor_values(tensors, by_name[n], tail) if n in by_name else []
        for n in ("probability", "label", "confidence")
    }
    count = max(len(c) for c in columns.values())
    version = _text(document.get("model_version"))

    def at(name: str, index: int) -> Any:
        return columns[name][index] if index < len(columns[name]) else None

    predictions = [
        Prediction(_float(at("probability", i)), _text(at("label", i)), _text(at("confidence", i)), version)
        for i in range(count)
    ]
    return ParsedResponse(_text(document.get("model_name")), version, predictions)


@dataclass(frozen=True)
class ImageInfo:
    """What the sink keeps of one request image."""

    features: dict[str, float | str] | None
    decode_error: str | None
    sha256: str | None
    format: str  # JPEG | PNG | WEBP | bin (not decodable)
    data: bytes | None  # the image itself, only with keep_images


def analyse_request(body: bytes, limits: ImageLimits, keep_images: bool) -> list[ImageInfo]:
    """Decode every image of a request and measure its features (runs in the worker processes)."""
    document, tail = load_body(body)
    infos = []
    for item in request_images(document, tail):
        if isinstance(item, str):
            infos.append(ImageInfo(None, item, None, "bin", None))
            continue
        sha = hashlib.sha256(item).hexdigest()
        kept = item if keep_images else None
        try:
            decoded = decode_image(item, limits, draft_size=DRAFT_SIZE)
        except InvalidImageError as exc:
            infos.append(ImageInfo(None, str(exc), sha, "bin", kept))
            continue
        infos.append(ImageInfo(image_features(decoded), None, sha, decoded.format, kept))
    return infos


def _lower_priority() -> None:
    os.nice(10)  # accepting events (the HTTP event loop) comes before feature extraction


@dataclass
class Half:
    """A request or response in the log, waiting for its other half."""

    event: Event  # without its body
    ref: WalRef
    images: list[ImageInfo] | None = None  # a request's, once analysed
    response: ParsedResponse | None = None  # a response's, once parsed
    ready: bool = False


@dataclass
class Pair:
    since: float = field(default_factory=time.monotonic)  # when its first half was accepted
    request: Half | None = None
    response: Half | None = None


def _stored(value: str) -> str | None:
    return value or None


class Sink:
    """Accepts events into the write-ahead log, analyses and pairs them, and hands records to the S3 writer."""

    def __init__(self, settings: SinkSettings, s3: S3Settings, limits: ImageLimits) -> None:
        self.settings = settings
        self.limits = limits
        self.wal = WriteAheadLog(settings.wal_dir, self._committed)
        self.written = WrittenIds(settings.wal_dir, settings.dedup_ids)
        self.store = RecordStore(settings, s3, self.wal, self.written, self._on_written)
        self._logged: set[str] = set()  # keys of the events in the log
        self._writing: dict[str, asyncio.Future[WalRef]] = {}  # keys of the events being written to the log
        self._pairs: dict[str, Pair] = {}  # by pair key, oldest first
        self._queue: asyncio.Queue[tuple[Half, bytes | None]] = asyncio.Queue()
        self._pool: Executor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._replaying = False

    def _new_pool(self) -> Executor:
        if self.settings.workers == 0:
            return ThreadPoolExecutor(1, thread_name_prefix="sink-features")
        return ProcessPoolExecutor(self.settings.workers, mp_context=get_context("spawn"), initializer=_lower_priority)

    async def start(self) -> None:
        """Replay the write-ahead log, then start the analysers, the timer and the uploader."""
        self._pool = self._new_pool()
        replayed = skipped = 0
        self._replaying = True
        for ref, meta, body in self.wal.replay():
            event = Event.from_log(meta, body)
            if event.key in self.written:  # its records reached S3 just before the process ended
                self.wal.release(ref)
                skipped += 1
                continue
            self._committed(ref, event)
            replayed += 1
        self._replaying = False
        log.info("sink_started", wal_dir=str(self.wal.folder), replayed_events=replayed, already_written=skipped)
        consumers = [self._analyse_loop() for _ in range(2 * max(1, self.settings.workers))]
        self._tasks = [asyncio.create_task(c) for c in (*consumers, self._timer(), self.store.run())]

    async def accept(self, event: Event) -> bool:
        """Store ``event`` durably: True once it is in the log, False for a duplicate.

        Raises:
            WalUnavailableError: the log could not be written.
        """
        key = event.key
        writing = self._writing.get(key)
        if writing is not None:  # the same event is being written: answer as that write ends
            await asyncio.shield(writing)
        elif key not in self._logged and key not in self.written:
            task = asyncio.ensure_future(self.wal.append(event.meta(), event.body, event))
            self._writing[key] = task
            task.add_done_callback(lambda _: self._writing.pop(key, None))
            await asyncio.shield(task)
            return True
        metrics.SINK_DUPLICATES.inc()
        log.debug("event_duplicate", ce_id=event.id, type=event.kind)
        return False

    def _committed(self, ref: WalRef, event: Event) -> None:
        """``event`` is in the log (or replayed from it): pair it up and queue it for analysis."""
        if not self._replaying:
            metrics.SINK_EVENTS.labels(type=event.kind).inc()
        metrics.SINK_WAL_EVENTS.inc()
        self._logged.add(event.key)
        pair = self._pairs.get(event.pair_key)
        if pair is None:
            pair = self._pairs[event.pair_key] = Pair()
        half = Half(replace(event, body=b""), ref)
        if event.kind == "request":
            pair.request = half
        else:
            pair.response = half
        self._queue.put_nowait((half, event.body if self._queue.qsize() < _MEMORY_BACKLOG else None))

    def _on_written(self, keys: list[str]) -> None:
        for key in keys:
            self._logged.discard(key)

    async def _analyse_loop(self) -> None:
        while True:
            half, body = await self._queue.get()
            try:
                if body is None:
                    body = (await asyncio.to_thread(self.wal.read, half.ref))[1]
                if half.event.kind == "request":
                    half.images = await self._analyse(half.event, body)
                else:
                    half.response = parse_response(*load_body(body))
                half.ready = True
                self._pair_if_complete(half.event.pair_key)
            finally:
                self._queue.task_done()

    async def _analyse(self, event: Event, body: bytes) -> list[ImageInfo]:
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._pool
            try:
                return await loop.run_in_executor(pool, analyse_request, body, self.limits, self.settings.keep_images)
            except BrokenProcessPool as exc:  # a worker died (e.g. killed for memory): start fresh ones, once
                log.error("feature_workers_failed", ce_id=event.id, attempt=attempt, error=str(exc))
                if self._pool is pool:
                    self._pool = self._new_pool()
                    if pool is not None:
                        pool.shutdown(wait=False, cancel_futures=False)
            except Exception as exc:  # a bug must not lose the event: it is written with the error as decode_error
                log.exception("request_analysis_failed", ce_id=event.id)
                return [ImageInfo(None, f"the sink could not analyse the request: {exc!r}", None, "bin", None)]
        return [ImageInfo(None, "the sink's feature workers failed twice on this request", None, "bin", None)]

    def _pair_if_complete(self, key: str) -> None:
        pair = self._pairs.get(key)
        if pair and pair.request and pair.response and pair.request.ready and pair.response.ready:
            del self._pairs[key]
            self._emit(pair, paired=True)

    def _expire(self, everything: bool = False) -> None:
        """Write the halves whose partner did not come within pair_timeout_seconds."""
        cutoff = time.monotonic() - (0 if everything else self.settings.pair_timeout_seconds)
        expired = []
        for key, pair in self._pairs.items():
            if pair.since > cutoff:
                break
            half = pair.request or pair.response
            if (pair.request is None or pair.response is None) and half is not None and half.ready:
                expired.append(key)
        for key in expired:
            pair = self._pairs.pop(key)
            metrics.SINK_UNPAIRED.inc()
            side = "request" if pair.request else "response"
            log.debug("event_unpaired", ce_id=(pair.request or pair.response).event.id, side=side)  # type: ignore[union-attr]
            self._emit(pair, paired=False)

    def _emit(self, pair: Pair, paired: bool) -> None:
        """One record per image (per prediction when there is no request) to the S3 writer."""
        request, response = pair.request, pair.response
        halves = [h for h in (request, response) if h is not None]
        event = halves[0].event
        when = datetime.fromtimestamp(event.time or event.received, UTC)
        parsed = response.response if response else None
        images = (request.images or []) if request else []
        predictions = parsed.predictions if parsed else []
        model_name = (parsed.model_name if parsed else None) or _stored(event.inference_service)
        model_version = parsed.model_version if parsed else None
        rows, kept = [], {}
        for index in range(max(len(images), len(predictions), 1)):
            image = images[index] if index < len(images) else None
            prediction = predictions[index] if index < len(predictions) else None
            features = (image.features if image else None) or {}
            rows.append(
                {
                    "event_id": event.id,
                    "image_index": index,
                    "time": when,
                    "inference_service": _stored(event.inference_service),
                    "namespace": _stored(event.namespace),
                    "endpoint": _stored(event.endpoint),
                    "model_name": model_name,
                    "model_version": (prediction.model_version if prediction else None) or model_version,
                    "probability": prediction.probability if prediction else None,
                    "predicted_label": prediction.label if prediction else None,
                    "confidence": prediction.confidence if prediction else None,
                    **{name: features.get(name) for name in FEATURE_COLUMNS},
                    "image_sha256": image.sha256 if image else None,
                    "decode_error": image.decode_error if image else None,
                    "paired": paired,
                }
            )
            if image is not None and image.data is not None and image.sha256:
                kept[image.sha256] = (image.data, image.format)
        partition = Partition(f"{when:%Y-%m-%d}", model_name or "unknown", model_version or "unknown")
        self.store.add(partition, rows, [h.event.key for h in halves], [h.ref for h in halves], kept)

    async def _timer(self) -> None:
        interval = min(1.0, self.settings.pair_timeout_seconds / 4, self.settings.flush_seconds / 4)
        while True:
            await asyncio.sleep(interval)
            self._expire()
            self.store.tick()
            self.wal.maintain()

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish what can be finished within ``timeout``: analyse, pair, upload. The rest stays in the log."""
        deadline = time.monotonic() + timeout
        await self.wal.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)
        await self.store.drain(max(0.0, deadline - time.monotonic()))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.written.close()
        log.info("sink_stopped", events_left_in_log=self.wal.events, unpaired_waiting=len(self._pairs))

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "wal_events": self.wal.events, "waiting_for_pair": len(self._pairs)}


class SinkApp:
    """The ASGI application: POST (any path) takes events; GET /healthz and /metrics."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "POST":
                await self._event(scope, receive, send)
            elif method == "GET" and path == "/healthz":
                await _respond(send, 200, self.sink.health())
            elif method == "GET" and path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                await _respond(send, 200, generate_latest(metrics.SINK_REGISTRY), CONTENT_TYPE_LATEST)
            else:
                await _respond(send, 404, {"error": f"{method} {path}: not found; POST events, GET /healthz, /metrics"})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.sink.start()
                except (OSError, DetectorError) as exc:
                    log.exception("sink_start_failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.sink.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _event(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        received = time.time()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.sink.settings.max_event_bytes
        try:
            body = await _read_body(receive, headers, limit)
            event = parse_event(headers, body, received)
            stored = await self.sink.accept(event)
        except SinkEventError as exc:
            metrics.SINK_REJECTED.labels(reason=exc.reason).inc()
            log.warning("event_rejected", reason=exc.reason, error=str(exc), ce_id=headers.get("ce-id"))
            await _respond(send, exc.status, {"error": str(exc), "reason": exc.reason})
            return
        except WalUnavailableError as exc:
            metrics.SINK_REJECTED.labels(reason="wal_unavailable").inc()
            await _respond(send, 503, {"error": f"{exc}; the event was not stored, send it again later"})
            return
        await _respond(send, 200, {"status": "stored" if stored else "duplicate", "id": event.id})


async def _read_body(receive: Any, headers: Mapping[str, str], limit: int) -> bytes:
    too_large = SinkEventError(f"the event is over {limit} bytes (APD_SINK__MAX_EVENT_BYTES)", "too_large", 413)
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise SinkEventError("the client went away before sending the whole event", "disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Any, status: int, body: Any, content_type: str = "application/json") -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type.encode())]})
    await send({"type": "http.response.body", "body": data})


def run_sink(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (``apd sink``)."""
    import uvicorn

    app = SinkApp(Sink(settings.sink, settings.s3, settings.images))
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run()
