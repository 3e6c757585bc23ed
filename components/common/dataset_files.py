"""Reading the images of a dataset: the one place validate, train, evaluate and register get an image's bytes.

A dataset's location is a local folder or an ``s3://bucket/prefix`` (``minio://`` too: the URI KFP gives an
artifact, on the configured store), for a distributed job's pods get the artifact's URI rather than a mounted
folder. A manifest row is read by its ``ref`` (``common.dataset``):

- "" (a copied image): ``<location>/<path>``;
- an absolute local path: only while its size and modification time are the ones ingest recorded (``ref_check``
  ``size:mtime_ns``, compared on the opened file);
- ``s3://bucket/key``: a GET carrying ``If-Match: <the ETag ingest recorded>``, so the store refuses a changed
  object in the same request.

A changed or missing image is a DataSourceError naming it and saying to ingest again: never other data than the
dataset's version stands for.

A batch is read by a small thread pool (S3 GETs wait on the network, local reads on the disk), in the order asked.
The reader is picklable and makes its S3 client and thread pool lazily in each process: DataLoader workers are
forked, and a client's pooled connections must not be shared between processes.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pandas as pd

from components.common.dataset import read_manifest, with_later_columns
from components.common.errors import DataSourceError
from components.common.s3 import is_s3_uri, parse_uri, read_recorded, store_client
from components.common.settings import S3Settings

READ_THREADS = 8  # reads of one batch in flight at once
_WINDOW = 4  # read_each reads at most threads x _WINDOW rows ahead of its consumer
T = TypeVar("T")


class ImageRow(Protocol):
    """What reading needs of a manifest row (a row of ``DataFrame.itertuples()`` has it, ``ImageRef`` too)."""

    @property
    def path(self) -> str: ...

    @property
    def ref(self) -> str: ...

    @property
    def ref_check(self) -> str: ...


@dataclass(frozen=True)
class ImageRef:
    """Where one image of a dataset is: its manifest ``path``, and for an image by reference its ``ref`` and
    ``ref_check``."""

    path: str
    ref: str = ""
    ref_check: str = ""


def image_refs(rows: pd.DataFrame) -> list[ImageRef]:
    """The ``ImageRef`` of each row, in order (rows of a manifest from before references read as copies)."""
    full = with_later_columns(rows)
    return [ImageRef(*row) for row in zip(full["path"], full["ref"], full["ref_check"], strict=True)]


def file_check(stat: os.stat_result) -> str:
    """What tells a local source file unchanged since ingest: ``size:mtime_ns``."""
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _read_file(path: Path, check: str) -> bytes:
    """A local file's bytes; with ``check``, only while ``file_check`` of the opened file still gives it."""
    try:
        with path.open("rb") as handle:
            now = file_check(os.fstat(handle.fileno()))
            if check and now != check:
                raise DataSourceError(
                    f"{path} changed since it was ingested (size:mtime_ns {check}, now {now}); ingest the source again"
                )
            return handle.read()
    except FileNotFoundError as exc:
        raise DataSourceError(f"{path} is missing; ingest the source again") from exc
    except OSError as exc:
        raise DataSourceError(f"cannot read {path}: {exc.strerror}") from exc


@dataclass
class _PerProcess:
    """A reader's S3 client in one process, and that process's read pool."""

    pid: int
    pool: ThreadPoolExecutor
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: Any = None  # made at the first S3 read


_POOLS: dict[int, ThreadPoolExecutor] = {}  # this process's read pools by size, shared by every reader
_POOLS_LOCK = threading.Lock()


def _forget_pools() -> None:
    """In a forked child: the parent's pools' threads do not exist here."""
    global _POOLS_LOCK  # noqa: PLW0603 - a lock another thread held at the fork would stay held in the child
    _POOLS.clear()
    _POOLS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_forget_pools)


def _read_pool(threads: int) -> ThreadPoolExecutor:
    """The read pool of ``threads`` threads of this process: one, shared by every reader, so that the readers of
    each validate, evaluate or training call leave no idle threads behind."""
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, "dataset-read")
        return _POOLS[threads]


class DatasetImages:
    """The images of the dataset at ``location`` (a folder or an ``s3://bucket/prefix``); ``s3`` reaches the store
    of an S3 location or of S3 references (without it, only local images can be read)."""

    def __init__(self, location: Path | str, s3: S3Settings | None = None, threads: int = READ_THREADS) -> None:
        self.location = str(location)
        self.s3 = s3
        self.threads = threads
        self._process: _PerProcess | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without this process's client and pool (the unpickling process makes its own)."""
        return {**self.__dict__, "_process": None}

    def manifest(self) -> pd.DataFrame:
        """The dataset's manifest (``common.dataset.read_manifest``)."""
        return read_manifest(self.location, self.s3)

    def read(self, row: ImageRow) -> bytes:
        """The bytes of the image of ``row``, as ingest recorded them; a DataSourceError naming the image when it
        changed or is missing."""
        if row.ref:
            if is_s3_uri(row.ref):
                return self._read_s3(row.ref, row.ref_check)
            return _read_file(Path(row.ref), row.ref_check)
        if is_s3_uri(self.location):
            return self._read_s3(f"{self.location.rstrip('/')}/{row.path}", "")
        return _read_file(Path(self.location) / row.path, "")

    def read_batch(self, rows: Sequence[ImageRow]) -> list[bytes]:
        """The bytes of each row, in order, read ``threads`` at a time; raises the first row's DataSourceError."""
        if len(rows) <= 1:
            return [self.read(row) for row in rows]
        return list(self._state().pool.map(self.read, rows))

    def read_each(self, rows: Iterable[ImageRow], then: Callable[[bytes], T]) -> Iterator[T | DataSourceError]:
        """``then`` of each row's bytes, or the DataSourceError saying why they cannot be read, in order. Rows are
        read and ``then`` runs ``threads`` at a time (Pillow decodes without holding the GIL), a few batches ahead
        of the consumer at most, so a large dataset is never held whole."""
        pool, pending = self._state().pool, deque[Future[T | DataSourceError]]()

        def outcome(row: ImageRow) -> T | DataSourceError:
            try:
                data = self.read(row)
            except DataSourceError as exc:
                return exc
            return then(data)

        for row in rows:
            pending.append(pool.submit(outcome, row))
            if len(pending) == self.threads * _WINDOW:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def _read_s3(self, uri: str, etag: str) -> bytes:
        bucket, prefix = parse_uri(uri)
        state = self._state()
        with state.lock:  # the first reads of a batch arrive together
            if state.client is None:
                state.client = store_client(self.s3, uri)
        return read_recorded(state.client, bucket, prefix.removesuffix("/"), etag)

    def _state(self) -> _PerProcess:
        """This process's pool (and client, once an S3 object is read), made on first use here: a forked worker
        finds its parent's and replaces them."""
        if self._process is None or self._process.pid != os.getpid():
            self._process = _PerProcess(os.getpid(), _read_pool(self.threads))
        return self._process
