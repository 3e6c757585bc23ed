"""The payload sink's written ids: the events already on S3, so that a resent event is recognised as a duplicate.

``written.ids`` in ``SinkSettings.wal_dir``, one line per event on S3 (``<type>|<namespace>|<isvc>|<ce-id>``),
appended and fsynced after each upload, before the events leave the write-ahead log: a resent event is recognised
across restarts, and a replay skips events whose records are already on S3. The newest ``dedup_ids`` are kept: the
file is rewritten with them at a start that finds more, and when it has grown past twice as many lines.
"""

from __future__ import annotations

import os
from pathlib import Path

from serving.sink_wal import fsync_folder

WRITTEN_IDS_FILE = "written.ids"


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
        fsync_folder(self.path.parent)
        self._lines = len(self._keys)

    def close(self) -> None:
        os.close(self._fd)
