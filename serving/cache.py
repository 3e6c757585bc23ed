"""The result cache: marketplaces see the same photo many times (re-listings, duplicate listings, scammers re-using
an image), and the same bytes under the same model version and inference variant get the same answer, so the model
server keeps the answers it computed and serves them again without decoding.

- Key: the sha256 of the image's bytes, the model version and the variant (``runtime/precision``). A byte changed
  is another image; a new model version or variant never sees the old one's answers.
- Bounded: at most ``max_entries`` answers, the least recently used goes first; an answer is served for
  ``ttl_seconds`` after it was computed, then computed again.
- One cache per process, in memory: with ``--workers N`` each worker has its own (a repeat that lands on another
  worker is computed there once), and a restart starts empty.
- Inference runs on the event loop's thread, so lookups do not race today; a lock keeps the cache correct should a
  caller ever come from another thread (uncontended, it costs well under a microsecond).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from components.common.protocol import Answer
from components.common.settings import CacheSettings

Key = tuple[bytes, str, str]  # (sha256 of the image, model version, variant)


def cache_key(image: bytes, model_version: str, variant: str) -> Key:
    """The cache key of ``image`` under ``model_version`` and ``variant``."""
    return hashlib.sha256(image).digest(), model_version, variant


class ResultCache:
    """A bounded LRU of answers with a time to live; ``clock`` (seconds, monotonic) is injectable for tests."""

    def __init__(self, settings: CacheSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.clock = settings, clock
        self._entries: OrderedDict[Key, tuple[float, Answer]] = OrderedDict()  # oldest use first; (expiry, answer)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> Answer | None:
        """The stored answer of ``key``, None when there is none or it expired (then it is dropped)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self.clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: Key, answer: Answer) -> None:
        """Store ``answer`` under ``key`` for ``ttl_seconds``; over ``max_entries``, drop the least recently used."""
        if not self.enabled:
            return
        now = self.clock()
        with self._lock:
            self._entries[key] = (now + self.settings.ttl_seconds, answer)
            self._entries.move_to_end(key)
            while len(self._entries) > self.settings.max_entries:
                self._entries.popitem(last=False)
            # Expired answers at the cold end go now rather than when looked up again (which may be never).
            while self._entries and next(iter(self._entries.values()))[0] <= now:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __getstate__(self) -> dict[str, Any]:
        """With ``--workers N`` KServe pickles the model into each worker: each starts with an empty cache of its
        own (a lock cannot travel)."""
        return {"settings": self.settings, "clock": self.clock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.settings, self.clock = state["settings"], state["clock"]
        self._entries = OrderedDict()
        self._lock = threading.Lock()
