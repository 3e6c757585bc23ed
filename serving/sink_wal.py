"""The payload sink's write-ahead log: an accepted event is durable once it is here.

Segment files ``wal-<n>.log`` in ``SinkSettings.wal_dir``. A record is
``<u32 length><u32 crc32><u32 meta length><meta JSON><body>`` (little-endian). Concurrent appends are written with one
``write`` and one ``fsync`` (group commit) before any of them is acknowledged. A segment is deleted when every event
in it is on S3; a start replays the segments left. A torn last record (a crash in the middle of a write, never
acknowledged) is skipped.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from components.common.errors import DetectorError

log = structlog.get_logger(__name__)

_FRAME = struct.Struct("<II")  # payload length, crc32 of the payload
_META = struct.Struct("<I")  # length of the meta JSON at the start of the payload
SEGMENT_BYTES = 16 * 1024 * 1024  # a segment is closed at this size ...
SEGMENT_SECONDS = 10.0  # ... or this age, so that written events leave the disk soon


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
        fsync_folder(self.folder)  # the new file's name is durable too
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


def fsync_folder(folder: Path) -> None:
    """Make the names of the files created, replaced or deleted in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
