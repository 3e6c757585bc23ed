"""``apd sink``: the payload sink. KServe's payload logger (``spec.predictor.logger: {mode: all, url: ...}``) posts
every inference request and response to it as a binary-mode CloudEvent; the sink pairs them and writes one record
per image (its features and its prediction) to S3 as Parquet, for the drift job.

    apd sink --port 8080        POST / (events), GET /healthz, GET /metrics

KServe 0.21 sends (``pkg/logger``): ``ce-id`` (the same for a request and its response), ``ce-type``
(``org.kubeflow.serving.inference.request`` / ``.response``), ``ce-source``, ``ce-specversion`` 1.0, ``ce-time``,
``ce-inferenceservicename``, ``ce-namespace``, ``ce-endpoint`` (e.g. ``default``/``canary``), ``ce-component``,
``ce-metadata``; the body is the inference request or response as sent, with the request's Content-Type. It logs a
response only when the server answered 200, and does not resend an event the sink refused.

An event is answered 200 only once it is fsynced to the write-ahead log (``serving/sink_wal.py``); a background
task decodes the images (a process pool, ``serving/sink_events.py``), pairs request and response by ce-id and
hands records to the S3 writer (``serving/sink_store.py``). Once a file is on S3 its events' ids are remembered
(``serving/sink_ids.py``) and the events leave the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing import get_context
from typing import Any

import structlog

from components.common.errors import DetectorError
from components.common.records import FEATURE_COLUMNS, Partition
from components.common.settings import ImageLimits, S3Settings, Settings, SinkSettings
from serving import metrics
from serving.sink_events import (
    Event,
    ImageInfo,
    ParsedResponse,
    SinkEventError,
    analyse_request,
    load_body,
    parse_event,
    parse_response,
)
from serving.sink_ids import WrittenIds
from serving.sink_store import RecordStore
from serving.sink_wal import WalRef, WalUnavailableError, WriteAheadLog

log = structlog.get_logger(__name__)

_MEMORY_BACKLOG = 2000  # events waiting for analysis beyond this are read back from the log, not kept in memory


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
        self.store = RecordStore(settings, s3, self)
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

    def remember_written(self, keys: list[str]) -> None:
        """A file with these events' records is on S3 (``RecordStore``, from its upload thread)."""
        self.written.add(keys)

    def release_written(self, keys: list[str], refs: list[WalRef]) -> None:
        """Those events' ids are remembered: they leave the log (``RecordStore``, on the event loop)."""
        metrics.SINK_WAL_EVENTS.dec(len(refs))
        for ref in refs:
            self.wal.release(ref)
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
                    "ai_declared": prediction.ai_declared if prediction else None,
                    "c2pa": prediction.c2pa if prediction else None,
                    "provenance_generator": prediction.provenance_generator if prediction else None,
                    "verdict_source": prediction.verdict_source if prediction else None,
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
