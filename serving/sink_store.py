"""Storage of the payload sink: the write-ahead log that makes an accepted event durable, the ids of events already
written, and the Parquet files on S3.

Write-ahead log: segment files ``wal-<n>.log`` in ``SinkSettings.wal_dir``. A record is
``<u32 length><u32 crc32><u32 meta length><meta JSON><body>`` (little-endian). Concurrent appends are written with one
``write`` and one ``fsync`` (group commit) before any of them is acknowledged. A segment is deleted when every event
in it is on S3; a start replays the segments left. A torn last record (a crash in the middle of a write, never
acknowledged) is skipped.

Written ids: ``written.ids`` in the same folder, one line per event on S3 (``<type>|<namespace>|<isvc>|<ce-id>``),
appended and fsynced after each upload, before the events leave the log: a resent event is recognised across
restarts, and a replay skips events whose records are already on S3.
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from components.common.errors import DetectorError
from components.common.records import RECORD_SCHEMA, Partition, record_key
from components.common.settings import S3Settings, SinkSettings
from serving import metrics

log = structlog.get_logger(__name__)

_FRAME = struct.Struct("<II")  # payload length, crc32 of the payload
_META = struct.Struct("<I")  # length of the meta JSON at the start of the payload
SEGMENT_BYTES = 16 * 1024 * 1024  # a segment is closed at this size ...
SEGMENT_SECONDS = 10.0  # ... or this age, so that written events leave the disk soon
WRITTEN_IDS_FILE = "written.ids"


class WalUnavailableError(DetectorError):
    """The write-ahead log could not be written (disk full, I/O error): the event is not accepted (HTTP 503)."""


class WalRef(NamedTuple):
    """Where one event lies in the write-ahead log."""

    segment: int
    offset: int
    length: int


class WriteAheadLog:
    """Append-only segments with group commit. ``on_commit(ref, item)`` runs for every record once it is on disk,
    whether or not the caller that appended it is still waiting."""

    def __init__(self, folder: Path, on_commit: Callable[[WalRef, Any], None]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self._on_commit = on_commit
        self._outstanding: dict[int, int] = {}  # segment -> its events not yet on S3
        self._next = max(self._existing(), default=0) + 1
        self._active: int | None = None
        self._fd: int | None = None
        self._size = 0
        self._opened = 0.0
        self._broken = False  # the last write failed: continue in a fresh segment
        self._queue: list[tuple[bytes, Any, asyncio.Future[WalRef]]] = []
        self._writer: asyncio.Task[None] | None = None

    def _path(self, segment: int) -> Path:
        return self.folder / f"wal-{segment:010d}.log"

    def _existing(self) -> list[int]:
        return sorted(int(p.stem[4:]) for p in self.folder.glob("wal-*.log") if p.stem[4:].isdigit())

    @property
    def events(self) -> int:
        """Events in the log that are not yet on S3."""
        return sum(self._outstanding.values())

    def replay(self) -> Iterator[tuple[WalRef, bytes, bytes]]:
        """``(ref, meta, body)`` of every intact record left by earlier runs, oldest first. Call before ``append``."""
        for segment in self._existing():
            data = self._path(segment).read_bytes()
            records: list[tuple[WalRef, bytes, bytes]] = []
            offset = 0
            while offset < len(data):
                if offset + _FRAME.size > len(data):
                    break
                length, crc = _FRAME.unpack_from(data, offset)
                payload = data[offset + _FRAME.size : offset + _FRAME.size + length]
                if len(payload) < length or zlib.crc32(payload) != crc:
                    break
                (meta_length,) = _META.unpack_from(payload)
                meta_end = _META.size + meta_length
                ref = WalRef(segment, offset, _FRAME.size + length)
                records.append((ref, payload[_META.size : meta_end], payload[meta_end:]))
                offset += _FRAME.size + length
            if offset < len(data):  # never acknowledged: the process died while writing it
                log.warning("wal_torn_record_skipped", segment=segment, offset=offset, bytes=len(data) - offset)
            self._outstanding[segment] = len(records)
            log.info("wal_segment_replayed", segment=segment, events=len(records))
            if not records:
                self._delete(segment)
            yield from records

    def read(self, ref: WalRef) -> tuple[bytes, bytes]:
        """``(meta, body)`` of a record still in the log."""
        with self._path(ref.segment).open("rb") as f:
            f.seek(ref.offset + _FRAME.size)
            payload = f.read(ref.length - _FRAME.size)
        (meta_length,) = _META.unpack_from(payload)
        return payload[_META.size : _META.size + meta_length], payload[_META.size + meta_length :]

    async def append(self, meta: bytes, body: bytes, item: Any) -> WalRef:
        """Write one record; returns once it is on disk. Raises ``WalUnavailableError`` when the write failed."""
        head = _META.pack(len(meta)) + meta
        frame = _FRAME.pack(len(head) + len(body), zlib.crc32(body, zlib.crc32(head)))
        future: asyncio.Future[WalRef] = asyncio.get_running_loop().create_future()
        self._queue.append((frame + head + body, item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop())
        return await future

    async def _write_loop(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                fd, segment = self._rotate_if_due()
                start, data = self._size, b"".join(r for r, _, _ in batch)
                await asyncio.to_thread(_write_durably, fd, data, start)
            except OSError as exc:
                self._broken = True
                log.error("wal_write_failed", error=str(exc), events=len(batch), folder=str(self.folder))
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(WalUnavailableError(f"the write-ahead log cannot be written: {exc}"))
                continue
            self._size = start + len(data)
            self._outstanding[segment] += len(batch)
            offset = start
            for record, item, future in batch:
                ref = WalRef(segment, offset, len(record))
                offset += len(record)
                self._on_commit(ref, item)
                if not future.done():
                    future.set_result(ref)

    def _rotate_if_due(self) -> tuple[int, int]:
        """The file descriptor and number of the segment to append to: a new one when the active one is full,
        old, broken or closed."""
        due = self._size >= SEGMENT_BYTES or time.monotonic() - self._opened >= SEGMENT_SECONDS
        if self._fd is not None and self._active is not None and not self._broken and not (due and self._size):
            return self._fd, self._active
        self._close_active()
        segment, self._next = self._next, self._next + 1
        fd = os.open(self._path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _fsync_folder(self.folder)  # the new file's name is durable too
        self._fd, self._active, self._size, self._opened, self._broken = fd, segment, 0, time.monotonic(), False
        self._outstanding[segment] = 0
        return fd, segment

    def _close_active(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        old, self._fd, self._active = self._active, None, None
        if old is not None and self._outstanding.get(old) == 0:
            self._delete(old)

    def release(self, ref: WalRef) -> None:
        """The event's records are on S3: it may leave the log."""
        left = self._outstanding[ref.segment] - 1
        self._outstanding[ref.segment] = left
        if left == 0 and ref.segment != self._active:
            self._delete(ref.segment)

    def maintain(self) -> None:
        """Close an idle active segment whose events are all on S3 (it is deleted), so that nothing lingers."""
        idle = not self._queue and (self._writer is None or self._writer.done())
        if idle and self._active is not None and self._outstanding[self._active] == 0:
            self._close_active()

    def _delete(self, segment: int) -> None:
        self._outstanding.pop(segment, None)
        self._path(segment).unlink(missing_ok=True)

    async def close(self) -> None:
        while self._writer is not None and not self._writer.done():
            await self._writer
        self._close_active()


def _write_durably(fd: int, data: bytes, start: int) -> None:
    view, written = memoryview(data), 0
    try:
        while written < len(view):
            written += os.write(fd, view[written:])
        os.fsync(fd)
    except OSError:
        try:  # leave no partial record for later appends to follow
            os.ftruncate(fd, start)
        except OSError as exc:
            log.error("wal_truncate_failed", error=str(exc))
        raise


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WrittenIds:
    """Keys of the events already on S3, the newest ``capacity`` of them, kept in a file next to the log."""

    def __init__(self, folder: Path, capacity: int) -> None:
        self.path = folder / WRITTEN_IDS_FILE
        self.capacity = capacity
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        self._keys = dict.fromkeys(lines[-capacity:])
        self._lines = len(lines)
        if self._lines > capacity:
            self._compact()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add(self, keys: list[str]) -> None:
        """Remember ``keys`` durably (blocking: call from a thread)."""
        if not keys:
            return
        data = ("\n".join(keys) + "\n").encode()
        os.write(self._fd, data)
        os.fsync(self._fd)
        for key in keys:
            self._keys[key] = None
        while len(self._keys) > self.capacity:
            del self._keys[next(iter(self._keys))]
        self._lines += len(keys)
        if self._lines > 2 * self.capacity:
            os.close(self._fd)
            self._compact()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _compact(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w") as f:
            f.write("".join(f"{key}\n" for key in list(self._keys)))
            f.flush()
            os.fsync(f.fileno())
        temporary.replace(self.path)
        _fsync_folder(self.path.parent)
        self._lines = len(self._keys)

    def close(self) -> None:
        os.close(self._fd)


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
    write-ahead log only after the upload succeeded and their ids are remembered."""

    def __init__(
        self,
        settings: SinkSettings,
        s3: S3Settings,
        wal: WriteAheadLog,
        written: WrittenIds,
        on_written: Callable[[list[str]], None],
    ) -> None:
        self.settings = settings
        self.writer = S3Writer(s3, settings)
        self.wal = wal
        self.written = written
        self._on_written = on_written
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
        self.written.add(batch.keys)  # a failure here retries the upload, which overwrites the same key
        return key

    def _written(self, batch: Batch, key: str, seconds: float) -> None:
        metrics.SINK_FLUSH_SECONDS.observe(seconds)
        metrics.SINK_RECORDS.inc(len(batch.rows))
        metrics.SINK_WAL_EVENTS.dec(len(batch.refs))
        for ref in batch.refs:
            self.wal.release(ref)
        self._on_written(batch.keys)
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
