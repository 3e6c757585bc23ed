"""The payload sink's records on their way to S3: buffered per partition (``components/common/records.py``),
written as one Parquet file per batch, retried with bounded backoff.

The store does not touch the write-ahead log or the written ids: once a file is on S3 it tells its ``WrittenEvents``
(the sink), which remembers the events' ids and lets them leave the log.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from components.common.records import RECORD_SCHEMA, Partition, record_key
from components.common.settings import S3Settings, SinkSettings
from serving import metrics
from serving.sink_wal import WalRef

log = structlog.get_logger(__name__)


class WrittenEvents(Protocol):
    """What becomes of the events behind a file once it is on S3, in this order."""

    def remember_written(self, keys: list[str]) -> None:
        """Remember ``keys`` durably as written. Blocking: called from the upload thread; an ``OSError`` retries the
        upload (which overwrites the same key)."""

    def release_written(self, keys: list[str], refs: list[WalRef]) -> None:
        """The events (their written-id keys and where they lie in the log) may leave the log. On the event loop."""


@dataclass
class Batch:
    """Records of one partition on their way to one Parquet file, and the events they came from."""

    partition: Partition
    rows: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # written-id keys of the events
    refs: list[WalRef] = field(default_factory=list)  # where those events lie in the log
    images: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # sha256 -> (data, format)
    started: float = field(default_factory=time.monotonic)
    name: str = field(default_factory=lambda: uuid.uuid4().hex)  # kept across retries: a retry overwrites

    def key(self, prefix: str) -> str:
        return record_key(prefix, self.partition, self.name)


def to_parquet(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=RECORD_SCHEMA), buffer, compression="zstd")
    return buffer.getvalue()


class S3Writer:
    """Uploads one batch: its images (when kept), then its Parquet file. Blocking: call from a thread."""

    def __init__(self, s3: S3Settings, sink: SinkSettings) -> None:
        import urllib3

        # No retries inside the client: the sink retries with its own logged backoff, and must not hang on a dead
        # server for a minute.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=3.0, read=30.0), retries=urllib3.Retry(total=0), maxsize=4
        )
        self.client = s3.client(http)
        self.settings = sink
        self._bucket_ready = False
        self._images_stored: dict[str, None] = {}  # recently stored image hashes, not uploaded twice

    def upload(self, batch: Batch) -> str:
        from minio.error import S3Error

        if not self._bucket_ready:
            if not self.client.bucket_exists(self.settings.bucket):
                try:
                    self.client.make_bucket(self.settings.bucket)
                except S3Error as exc:  # another writer made it meanwhile
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
                log.info("sink_bucket_created", bucket=self.settings.bucket)
            self._bucket_ready = True
        try:
            return self._put(batch)
        except S3Error as exc:
            if exc.code == "NoSuchBucket":  # removed (or a fresh server): make it again on the next attempt
                self._bucket_ready = False
            raise

    def _put(self, batch: Batch) -> str:
        for sha, (data, fmt) in batch.images.items():
            if sha in self._images_stored:
                continue
            name = f"{self.settings.images_prefix.strip('/')}/{sha}.{fmt.lower()}".lstrip("/")
            content_type = f"image/{fmt.lower()}"
            self.client.put_object(self.settings.bucket, name, io.BytesIO(data), len(data), content_type=content_type)
            self._images_stored[sha] = None
            if len(self._images_stored) > 100_000:
                del self._images_stored[next(iter(self._images_stored))]
        data = to_parquet(batch.rows)
        key = batch.key(self.settings.prefix)
        self.client.put_object(
            self.settings.bucket, key, io.BytesIO(data), len(data), content_type="application/vnd.apache.parquet"
        )
        return key


class RecordStore:
    """Records on their way to S3: buffered per partition, written as one Parquet file every ``flush_records``
    records or ``flush_seconds``, retried with bounded exponential backoff. The events behind a file leave the
    write-ahead log only after the upload succeeded and their ids are remembered (``WrittenEvents``)."""

    def __init__(self, settings: SinkSettings, s3: S3Settings, written_events: WrittenEvents) -> None:
        self.settings = settings
        self.writer = S3Writer(s3, settings)
        self.written_events = written_events
        self._buffers: dict[Partition, Batch] = {}
        self._ready: list[Batch] = []
        self._deferred: list[tuple[float, Batch]] = []  # (when to try again, batch)
        self._wake = asyncio.Event()
        self._uploading = False

    @property
    def idle(self) -> bool:
        return not (self._buffers or self._ready or self._deferred or self._uploading)

    def add(
        self,
        partition: Partition,
        rows: list[dict[str, Any]],
        keys: list[str],
        refs: list[WalRef],
        images: dict[str, tuple[bytes, str]],
    ) -> None:
        batch = self._buffers.get(partition)
        if batch is None:
            batch = self._buffers[partition] = Batch(partition)
        batch.rows += rows
        batch.keys += keys
        batch.refs += refs
        batch.images.update(images)
        if len(batch.rows) >= self.settings.flush_records:
            self._ready.append(self._buffers.pop(partition))
            self._wake.set()

    def tick(self, flush_all: bool = False) -> None:
        """Hand aged buffers (all with ``flush_all``) and deferred files that are due to the uploader."""
        now = time.monotonic()
        for partition, batch in list(self._buffers.items()):
            if flush_all or now - batch.started >= self.settings.flush_seconds:
                self._ready.append(self._buffers.pop(partition))
        due = [batch for when, batch in self._deferred if flush_all or when <= now]
        self._deferred = [(when, batch) for when, batch in self._deferred if not (flush_all or when <= now)]
        self._ready += due
        if self._ready:
            self._wake.set()

    async def run(self) -> None:
        """The uploader: one file at a time (S3 takes a file in milliseconds; records come by thousands)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ready:
                self._uploading = True
                try:
                    await self._upload(self._ready.pop(0))
                finally:
                    self._uploading = False

    async def _upload(self, batch: Batch) -> None:
        from minio.error import MinioException
        from urllib3.exceptions import HTTPError

        started, settings = time.monotonic(), self.settings
        for attempt in range(1, settings.max_retries + 1):
            try:
                key = await asyncio.to_thread(self._store, batch)
            except (MinioException, HTTPError, OSError) as exc:
                metrics.SINK_S3_ERRORS.inc()
                delay = min(settings.backoff_seconds * 2 ** (attempt - 1), settings.backoff_max_seconds)
                last = attempt == settings.max_retries
                log.warning(
                    "s3_upload_failed",
                    bucket=settings.bucket,
                    key=batch.key(settings.prefix),
                    attempt=attempt,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_seconds=settings.backoff_max_seconds if last else delay,
                )
                if not last:
                    await asyncio.sleep(delay)
                continue
            self._written(batch, key, time.monotonic() - started)
            return
        log.error("s3_upload_deferred", key=batch.key(settings.prefix), records=len(batch.rows), events=len(batch.refs))
        self._deferred.append((time.monotonic() + settings.backoff_max_seconds, batch))

    def _store(self, batch: Batch) -> str:
        key = self.writer.upload(batch)
        # A failure here retries the upload, which overwrites the same key.
        self.written_events.remember_written(batch.keys)
        return key

    def _written(self, batch: Batch, key: str, seconds: float) -> None:
        metrics.SINK_FLUSH_SECONDS.observe(seconds)
        metrics.SINK_RECORDS.inc(len(batch.rows))
        self.written_events.release_written(batch.keys, batch.refs)
        log.info(
            "records_written",
            bucket=self.settings.bucket,
            key=key,
            records=len(batch.rows),
            events=len(batch.refs),
            seconds=round(seconds, 3),
        )

    async def drain(self, timeout: float) -> None:
        """Shutdown: write everything buffered, for at most ``timeout`` seconds; what is left stays in the log."""
        self.tick(flush_all=True)
        deadline = time.monotonic() + timeout
        while not self.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
