"""Batch prediction: score a catalogue of images with the SERVED model over KServe's v2 protocol.

Sources (``apd predict SOURCE...``; the KFP component ``batch_predict`` takes one S3 prefix):
- image files, and folders (recursive; hidden files and folders are left out);
- ``.zip`` archives (each member a row, named ``archive.zip!member``);
- ``s3://bucket/prefix`` (every object below the prefix; endpoint and keys from ``APD_S3__*``);
- ``.txt`` files of ``http(s)://`` image URLs, one per line (blank lines and ``#`` comments are skipped), and
  http(s) URLs given directly.

Every image is one output row (CSV, JSON Lines or Parquet): ``source, sha256, probability, label, confidence,
model_version, ai_declared, c2pa, provenance_generator, verdict_source, error`` (the provenance columns are what the
file declares about its origin, as the server read it; ``label`` is ``ai_generated`` when ``ai_declared``). A bad
image (rejected by the server with a 400, over the byte limit, a failed fetch) is a row with ``error`` set; it never
stops the run. Requests carry ``batch_size`` images (raw bytes: the v2 REST binary-data extension or gRPC),
``concurrency`` of them in flight; a batch the server rejects is re-sent one image per request, so only the bad image
gets the error. Connection errors, 5xx and 503 (not ready) are retried with backoff; when the server stays
unavailable the run stops (exit 1) and keeps what it wrote.

Resumable: a re-run with the same output skips every source that already has a row (``retry_errors`` drops the
error rows first, so those sources are scored again). CSV and JSON Lines are appended after each batch. Parquet
cannot be appended: rows go to part files in ``<out>.parts/`` while the run goes on, and at the end the existing
file and the parts are rewritten into ``<out>`` (atomically) and the parts removed; an interrupted run leaves its
parts, which the next run reads as done and merges.
"""

import csv
import hashlib
import importlib
import json
import os
import random
import shutil
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from http.client import HTTPException
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import structlog
from kfp.dsl import Dataset, Output
from tqdm import tqdm

from components.common import protocol
from components.common.errors import DataSourceError, DetectorError, InvalidParameterError
from components.common.protocol import Answer
from components.common.settings import S3Settings
from components.stage import stage

log = structlog.get_logger(__name__)

T = TypeVar("T")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
URL_LIST_SUFFIXES = (".txt", ".urls")
# KServe's gRPC server takes messages up to 8 MiB: a request's images stay under this (one larger image goes alone).
MAX_REQUEST_BYTES = 7 * 1024 * 1024
_PARQUET_PART_ROWS = 1000  # rows per part file while a Parquet run goes on


class PredictError(DetectorError):
    """Batch prediction cannot go on: wrong URL, protocol or model name, an output that is not ours."""


class ServingUnavailableError(PredictError):
    """The server stayed unreachable or not ready through every retry; the rows written so far are kept."""


class RejectedError(DetectorError):
    """The server refused a request's input (HTTP 400, gRPC INVALID_ARGUMENT or a message over its size limit)."""


class TransientError(DetectorError):
    """A failure worth retrying. ``unavailable``: the server is unreachable or not ready (as opposed to a 5xx for
    this request), which stops the run when it lasts."""

    def __init__(self, message: str, unavailable: bool) -> None:
        super().__init__(message)
        self.unavailable = unavailable


class FetchError(DetectorError):
    """An image that could not be read from its source (a URL, S3, a file); the message goes into its row."""


# --------------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Item:
    """One image to score, before its bytes are read."""

    source: str  # what its row names: a path, archive.zip!member, s3://bucket/key or an http(s) URL
    size: int | None  # bytes, when the listing tells (None for URLs)
    # Reads the bytes (URLs: at most the limit it is given, plus one); raises FetchError or TransientError.
    load: Callable[[int], bytes] = field(compare=False, repr=False)


def _file_item(path: Path, name: str) -> Item:
    def load(_: int) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise FetchError(f"cannot read {name}: {exc.strerror or exc}") from exc

    return Item(name, path.stat().st_size, load)


def _visible(parts: Sequence[str]) -> bool:
    return not any(part.startswith(".") or part == "__MACOSX" for part in parts)


def folder_items(root: Path) -> list[Item]:
    """Every file below ``root`` (recursive, sorted), hidden files and folders left out."""
    paths = sorted(p for p in root.rglob("*") if p.is_file() and _visible(p.relative_to(root).parts))
    return [_file_item(p, str(p)) for p in paths]


def zip_items(archive: Path) -> list[Item]:
    """Every file member of a ZIP archive, named ``archive.zip!member``; one shared handle, read under a lock."""
    try:
        handle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataSourceError(f"{archive}: not a readable ZIP archive ({exc})") from exc
    lock = threading.Lock()

    def loader(info: zipfile.ZipInfo) -> Callable[[int], bytes]:
        def load(_: int) -> bytes:
            try:
                with lock:
                    return handle.read(info)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:  # a damaged member, not a damaged run
                raise FetchError(f"cannot read {info.filename} from {archive}: {exc}") from exc

        return load

    members = [i for i in handle.infolist() if not i.is_dir() and _visible(i.filename.split("/"))]
    return [Item(f"{archive}!{i.filename}", i.file_size, loader(i)) for i in members]


def url_list_items(path: Path, timeout: float) -> list[Item]:
    """The http(s) URLs of a text file, one per line; blank lines and ``#`` comments are skipped."""
    items = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        url = line.strip()
        if not url or url.startswith("#"):
            continue
        if urlsplit(url).scheme not in ("http", "https"):
            raise DataSourceError(f"{path}:{number}: {url!r} is not an http(s) URL; the file must hold one per line")
        items.append(url_item(url, timeout))
    return items


def fetch_url(url: str, timeout: float, max_bytes: int) -> bytes:
    """GET ``url``, reading at most ``max_bytes`` + 1 bytes. Raises TransientError (connection errors, timeouts,
    429 and 5xx answers) or FetchError (anything else: 404, over the byte limit ...)."""
    request = urllib.request.Request(url, headers={"User-Agent": "apd-predict"})  # noqa: S310 (http(s) checked)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) checked)
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > max_bytes:
                raise FetchError(f"the image is {declared} bytes; the limit is {max_bytes} bytes (not fetched)")
            data: bytes = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        message = f"fetch failed: HTTP {exc.code} {exc.reason}"
        if exc.code == 429 or exc.code >= 500:
            raise TransientError(message, unavailable=False) from exc
        raise FetchError(message) from exc
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        raise TransientError(f"fetch failed: {getattr(exc, 'reason', exc)}", unavailable=False) from exc
    if len(data) > max_bytes:
        raise FetchError(f"the image is over {max_bytes} bytes, the limit (fetch stopped there)")
    return data


def url_item(url: str, timeout: float) -> Item:
    return Item(url, None, partial(fetch_url, url, timeout))


def s3_items(uri: str, settings: S3Settings) -> list[Item]:
    """Every object below an ``s3://bucket/prefix``, with the minio client ingest builds from ``settings``."""
    from minio.error import MinioException, ServerError
    from urllib3.exceptions import HTTPError as ConnectionFailure

    from components.ingest import S3Source

    s3 = S3Source(uri, settings)  # parses the URI and builds the client (endpoint, keys, TLS, region)

    def loader(key: str) -> Callable[[int], bytes]:
        def load(_: int) -> bytes:
            try:
                return _read_object(s3.client, s3.bucket, key)
            except (ServerError, ConnectionFailure, OSError, HTTPException) as exc:  # the store, not the object
                raise TransientError(f"S3 read failed: {exc}", unavailable=False) from exc
            except MinioException as exc:  # no such key, access denied
                raise FetchError(f"cannot read s3://{s3.bucket}/{key}: {exc}") from exc

        return load

    try:
        objects = [o for o in s3.client.list_objects(s3.bucket, prefix=s3.prefix, recursive=True) if not o.is_dir]
    except (MinioException, ConnectionFailure, OSError) as exc:
        raise DataSourceError(f"cannot list {uri} on {settings.endpoint}: {exc}") from exc
    keys = sorted((o.object_name or "", o.size) for o in objects)
    return [
        Item(f"s3://{s3.bucket}/{key}", size, loader(key))
        for key, size in keys
        if not key.endswith("/") and _visible(key[len(s3.prefix) :].split("/"))  # folder markers, hidden files
    ]


def _read_object(client: Any, bucket: str, key: str) -> bytes:
    response = client.get_object(bucket, key)
    try:
        return bytes(response.read())
    finally:
        response.close()
        response.release_conn()


def expand_sources(sources: Sequence[str], s3: S3Settings | None = None, fetch_timeout: float = 30.0) -> list[Item]:
    """Command-line sources -> the images to score, in order, each source once."""
    items: list[Item] = []
    for source in sources:
        if source.startswith("s3://"):
            if s3 is None:
                raise DataSourceError(f"{source}: S3 sources need S3 settings (APD_S3__*)")
            items += s3_items(source, s3)
        elif source.startswith(("http://", "https://")):
            items.append(url_item(source, fetch_timeout))
        else:
            path = Path(source)
            if path.is_dir():
                items += folder_items(path)
            elif not path.is_file():
                raise DataSourceError(f"{source}: no such file or folder")
            elif path.suffix.lower() == ".zip":
                items += zip_items(path)
            elif path.suffix.lower() in URL_LIST_SUFFIXES:
                items += url_list_items(path, fetch_timeout)
            else:
                items.append(_file_item(path, source))
    seen: set[str] = set()
    unique = []
    for item in items:  # a source named twice (or reached twice) is scored once
        if item.source not in seen:
            seen.add(item.source)
            unique.append(item)
    return unique


# --------------------------------------------------------------------------------------------------- rows and output


@dataclass(frozen=True)
class Row:
    """One output row."""

    source: str
    sha256: str | None = None  # of the bytes sent (None when they could not be read)
    probability: float | None = None  # that the image is AI-generated
    label: str | None = None  # ai_generated | real
    confidence: str | None = None  # low | medium | high
    model_version: str | None = None  # the served model version that scored it
    ai_declared: bool | None = None  # the file declares AI generation or AI compositing (C2PA, IPTC, tool metadata)
    c2pa: str | None = None  # absent | valid | trusted | invalid | unreadable
    provenance_generator: str | None = None  # the generator the strongest AI declaration names
    verdict_source: str | None = None  # pixels | provenance: what decided the label
    error: str | None = None  # None, or why there is no prediction: the server's 400 message, the fetch error


COLUMNS = tuple(f.name for f in fields(Row))


def output_format(out: Path, fmt: str | None = None) -> str:
    """``csv``, ``jsonl`` or ``parquet``: ``fmt`` when given, else from the output's extension."""
    if fmt:
        if fmt not in set(FORMATS.values()):
            raise InvalidParameterError(f"unknown format {fmt!r}; use csv, jsonl or parquet")
        return fmt
    if out.suffix.lower() not in FORMATS:
        raise InvalidParameterError(
            f"cannot tell the format of {out} from its extension; name it .csv, .jsonl or .parquet, or pass --format"
        )
    return FORMATS[out.suffix.lower()]


class ResultWriter(Protocol):
    """Where rows go; it knows which sources a previous run already wrote."""

    def done(self) -> set[str]: ...

    def drop_errors(self) -> int: ...

    def write(self, rows: Sequence[Row]) -> None: ...

    def close(self) -> None: ...


def _cut_partial_line(path: Path) -> None:
    """Drop an unfinished last line (a run killed mid-write) so that appending starts on a fresh line."""
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        tail = min(size, 1 << 20)
        handle.seek(size - tail)
        end = handle.read(tail).rfind(b"\n")
        handle.truncate(size - tail + end + 1 if end >= 0 else 0)


class _TextWriter:
    """CSV and JSON Lines: rows are appended and flushed after every batch."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            _cut_partial_line(path)
        self._done = {str(r["source"]) for r in self._read()}
        self._file = path.open("a", newline="")
        self._csv = csv.DictWriter(self._file, COLUMNS) if fmt == "csv" else None
        if self._csv is not None and self._file.tell() == 0:
            self._csv.writeheader()

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        with self.path.open(newline="") as handle:
            if self.fmt == "csv":
                reader = csv.DictReader(handle)
                if tuple(reader.fieldnames or ()) != COLUMNS:
                    raise PredictError(f"{self.path} is not a predictions file: its columns are {reader.fieldnames}")
                return list(reader)
            rows = [json.loads(line) for line in handle if line.strip()]
        if any(not isinstance(r, dict) or "source" not in r for r in rows):
            raise PredictError(f"{self.path} is not a predictions file: a line has no 'source'")
        return rows

    def done(self) -> set[str]:
        return set(self._done)

    def drop_errors(self) -> int:
        rows = self._read()
        kept = [r for r in rows if not r.get("error")]  # CSV: "", JSON: null
        dropped = len(rows) - len(kept)
        if dropped:
            self._file.close()
            tmp = self.path.with_name(self.path.name + ".tmp")
            with tmp.open("w", newline="") as handle:
                if self.fmt == "csv":
                    writer = csv.DictWriter(handle, COLUMNS)
                    writer.writeheader()
                    writer.writerows(kept)
                else:
                    handle.writelines(json.dumps(r) + "\n" for r in kept)
            tmp.replace(self.path)
            self._done = {str(r["source"]) for r in kept}
            self._file = self.path.open("a", newline="")
            self._csv = csv.DictWriter(self._file, COLUMNS) if self.fmt == "csv" else None
        return dropped

    def write(self, rows: Sequence[Row]) -> None:
        for row in rows:
            if self._csv is not None:
                self._csv.writerow(asdict(row))
            else:
                self._file.write(json.dumps(asdict(row)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class _ParquetWriter:
    """Parquet: part files in ``<out>.parts/`` during the run, merged into ``<out>`` (atomically) at the end."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        self.path = path
        self.parts = path.with_name(path.name + ".parts")
        types = {"probability": pa.float64(), "ai_declared": pa.bool_()}
        self.schema = pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])
        path.parent.mkdir(parents=True, exist_ok=True)
        self._pending: list[Row] = []
        self._done = set(self._table().column("source").to_pylist())

    def _files(self) -> list[Path]:
        parts = sorted(self.parts.glob("part-*.parquet")) if self.parts.is_dir() else []
        return ([self.path] if self.path.exists() else []) + parts

    def _table(self) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = []
        for file in self._files():
            table = pq.read_table(file)
            if tuple(table.column_names) != COLUMNS:
                raise PredictError(f"{file} is not a predictions file: its columns are {table.column_names}")
            tables.append(table.cast(self.schema))
        table = pa.concat_tables(tables) if tables else self.schema.empty_table()
        first: dict[str, int] = {}  # a merge killed after its rename but before removing the parts leaves copies
        for index, source in enumerate(table.column("source").to_pylist()):
            first.setdefault(source, index)
        return table if len(first) == table.num_rows else table.take(sorted(first.values()))

    def done(self) -> set[str]:
        return set(self._done)

    def drop_errors(self) -> int:
        import pyarrow.compute as pc

        table = self._table()
        kept = table.filter(pc.is_null(table.column("error")))
        if kept.num_rows < table.num_rows:
            self._replace(kept)
            self._done = set(kept.column("source").to_pylist())
        return int(table.num_rows - kept.num_rows)

    def write(self, rows: Sequence[Row]) -> None:
        self._pending += rows
        if len(self._pending) >= _PARQUET_PART_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending:
            return
        self.parts.mkdir(exist_ok=True)
        number = len(list(self.parts.glob("part-*.parquet")))
        table = pa.Table.from_pylist([asdict(r) for r in self._pending], schema=self.schema)
        tmp = self.parts / f".part-{number:06d}.tmp"
        pq.write_table(table, tmp)
        tmp.replace(self.parts / f"part-{number:06d}.parquet")  # a part is there whole or not at all
        self._pending = []

    def _replace(self, table: Any) -> None:
        import pyarrow.parquet as pq

        tmp = self.path.with_name(self.path.name + ".tmp")
        pq.write_table(table, tmp)
        tmp.replace(self.path)
        shutil.rmtree(self.parts, ignore_errors=True)

    def close(self) -> None:
        self._flush()
        if self.parts.is_dir() or not self.path.exists():
            self._replace(self._table())


def open_writer(out: Path, fmt: str | None = None) -> ResultWriter:
    """The writer for ``out`` (format from ``fmt`` or the extension), holding what a previous run wrote there."""
    kind = output_format(out, fmt)
    return _ParquetWriter(out) if kind == "parquet" else _TextWriter(out, kind)


def read_rows(out: Path, fmt: str | None = None) -> list[dict[str, Any]]:
    """The rows of an output file as dicts (CSV cells are strings, empty for null)."""
    kind = output_format(out, fmt)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(out).to_pylist())
    with out.open(newline="") as handle:
        if kind == "csv":
            return list(csv.DictReader(handle))
        return [json.loads(line) for line in handle if line.strip()]


# --------------------------------------------------------------------------------------------------- scoring


class Scorer(Protocol):
    """The served model: raises RejectedError (bad input), TransientError (retry) or PredictError (stop)."""

    def ready(self) -> bool: ...

    def score(self, images: Sequence[bytes]) -> list[Answer]: ...


@dataclass(frozen=True)
class Retry:
    """Bounded retries with exponential backoff (and jitter, so that concurrent requests do not retry in step)."""

    attempts: int = 5  # tries in all, the first included
    backoff_seconds: float = 0.5  # wait before the second try; doubles each time
    max_backoff_seconds: float = 8.0  # longest wait between tries

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        base = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not security)


def with_retries(call: Callable[[], T], retry: Retry, what: str, sleep: Callable[[float], None] = time.sleep) -> T:
    """``call()``, retried on TransientError up to ``retry.attempts`` tries; each retry is logged."""
    for attempt in range(1, retry.attempts + 1):
        try:
            return call()
        except TransientError as exc:
            if attempt == retry.attempts:
                raise
            wait_seconds = retry.delay(attempt)
            log.warning(
                "predict_retry", what=what, attempt=attempt, wait_seconds=round(wait_seconds, 2), error=str(exc)
            )
            sleep(wait_seconds)
    raise AssertionError("unreachable")  # pragma: no cover


def classify_failure(status: str, message: str) -> Exception:
    """A tritonclient error (HTTP status code, or gRPC ``StatusCode.X``) -> what batch prediction does with it."""
    code = status.removeprefix("StatusCode.")
    if code in ("400", "413", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "OUT_OF_RANGE"):
        return RejectedError(message)
    if code in ("503", "502", "504", "UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return TransientError(f"server unavailable ({code}): {message}", unavailable=True)
    if (code.isdigit() and int(code) >= 500) or code in ("INTERNAL", "UNKNOWN", "ABORTED"):
        return TransientError(f"server error {code}: {message}", unavailable=False)
    return PredictError(f"the server answered {code}: {message}")


def parse_address(url: str, protocol: str) -> tuple[str, bool]:
    """``http(s)://host:port`` (REST) or ``[grpc(s)://]host:port`` (gRPC) -> (``host:port``, TLS)."""
    schemes = {"rest": {"http": False, "https": True}, "grpc": {"grpc": False, "grpcs": True, "": False}}[protocol]
    parts = urlsplit(url if "://" in url else f"//{url}")
    if parts.scheme not in schemes or not parts.netloc or parts.path not in ("", "/") or parts.query:
        expected = "http(s)://host:port" if protocol == "rest" else "host:port or grpc(s)://host:port"
        raise InvalidParameterError(f"bad {protocol} URL {url!r}; expected {expected}")
    return parts.netloc, schemes[parts.scheme]


class TritonScorer:
    """The served model through tritonclient (``rest``: tritonclient.http, raw bytes with the binary-data
    extension; ``grpc``: tritonclient.grpc). One client per thread."""

    def __init__(self, url: str, model: str, protocol: str = "rest", timeout: float = 60.0) -> None:
        if protocol not in ("rest", "grpc"):
            raise InvalidParameterError(f"unknown protocol {protocol!r}; use rest or grpc")
        if protocol == "grpc" and "kserve" in sys.modules:
            # Both register the same protobuf symbols: importing tritonclient.grpc next to kserve fails.
            raise PredictError("tritonclient.grpc cannot run in a process that imported kserve; run apd predict alone")
        self.address, self.ssl = parse_address(url, protocol)
        self.url, self.model, self.protocol, self.timeout = url, model, protocol, timeout
        self.module: ModuleType = importlib.import_module(f"tritonclient.{'grpc' if protocol == 'grpc' else 'http'}")
        # gRPC calls take a deadline each; REST clients get their timeouts when they are made
        self.deadline: dict[str, float] = {"client_timeout": timeout} if protocol == "grpc" else {}
        self._local = threading.local()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.protocol == "grpc":
                client = self.module.InferenceServerClient(self.address, ssl=self.ssl)
            else:
                client = self.module.InferenceServerClient(
                    self.address, ssl=self.ssl, connection_timeout=self.timeout, network_timeout=self.timeout
                )
            self._local.client = client
        return client

    def _call(self, call: Callable[[Any], T]) -> T:
        from tritonclient.utils import InferenceServerException

        try:
            return call(self._client())
        except InferenceServerException as exc:
            failure = classify_failure(str(exc.status()), str(exc.message()))
        except (OSError, HTTPException) as exc:  # REST: refused, reset, timed out, closed mid-answer
            failure = TransientError(f"cannot reach {self.url}: {exc}", unavailable=True)
        if isinstance(failure, TransientError):
            self._local.client = None  # a fresh connection for the next try
        raise failure

    def ready(self) -> bool:
        return bool(self._call(lambda c: c.is_model_ready(self.model, **self.deadline)))

    def score(self, images: Sequence[bytes]) -> list[Answer]:
        import numpy as np

        tc = self.module
        tensor = tc.InferInput(protocol.INPUT_NAME, [len(images)], protocol.INPUT_DATATYPE)
        tensor.set_data_from_numpy(np.array(list(images), dtype=np.object_))  # raw bytes, never base64
        outputs = [tc.InferRequestedOutput(name) for name in protocol.OUTPUT_NAMES]
        result = self._call(
            lambda c: c.infer(self.model, [tensor], outputs=outputs, request_id="apd-predict", **self.deadline)
        )
        response = result.get_response()
        version = str(response["model_version"] if isinstance(response, dict) else response.model_version)
        arrays = {name: result.as_numpy(name) for name in protocol.OUTPUT_NAMES}  # None: not sent (an older server)
        columns = {name: array.tolist() for name, array in arrays.items() if array is not None}
        if any(len(columns.get(name, ())) != len(images) for name in protocol.REQUIRED_OUTPUTS):
            raise PredictError(f"the server answered {len(images)} images with outputs of other lengths")
        columns["probability"] = [round(float(p), 6) for p in columns["probability"]]
        return protocol.read_v2(columns, version)


def wait_until_ready(scorer: Scorer, retry: Retry, sleep: Callable[[float], None] = time.sleep) -> None:
    """Return when the model is ready; raise ServingUnavailableError when it is not after ``retry``'s tries."""

    def check() -> None:
        if not scorer.ready():
            raise TransientError("the model is not ready", unavailable=True)

    try:
        with_retries(check, retry, "ready", sleep)
    except TransientError as exc:
        raise ServingUnavailableError(str(exc)) from exc


def score_images(
    scorer: Scorer, images: Sequence[bytes], retry: Retry, sleep: Callable[[float], None] = time.sleep
) -> list[Answer | str]:
    """One request for ``images``; per image an Answer or the error message. A request the server rejects (or
    keeps failing with a 5xx) is re-sent one image per request, so that only the bad image gets the error."""
    try:
        return list(with_retries(lambda: scorer.score(images), retry, "infer", sleep))
    except RejectedError as exc:
        failure = str(exc)
    except TransientError as exc:
        if exc.unavailable:
            raise ServingUnavailableError(f"{exc}; re-run the same command to resume") from exc
        failure = str(exc)
    if len(images) == 1:
        return [failure]
    log.info("predict_batch_split", images=len(images), error=failure)
    return [answer for image in images for answer in score_images(scorer, [image], retry, sleep)]


def _requests(indices: list[int], sizes: list[int], max_bytes: int) -> Iterator[list[int]]:
    """Group images into requests of at most ``max_bytes`` (an image larger than that goes alone)."""
    group: list[int] = []
    total = 0
    for i in indices:
        if group and total + sizes[i] > max_bytes:
            yield group
            group, total = [], 0
        group.append(i)
        total += sizes[i]
    if group:
        yield group


@dataclass(frozen=True)
class PredictOptions:
    """How ``predict_batch`` calls the server."""

    batch_size: int = 8  # images per request (the server accepts up to protocol.DEFAULT_MAX_BATCH)
    concurrency: int = 8  # requests (and URL fetches) in flight at once
    max_image_bytes: int = 10 * 1024 * 1024  # larger images are error rows, never sent (settings.images.max_bytes)
    max_request_bytes: int = MAX_REQUEST_BYTES  # a request's images together (gRPC message limit)
    retry: Retry = Retry()  # transient failures: connection errors, 5xx, 503 not ready, URL fetches
    retry_errors: bool = False  # score again the sources whose earlier row has an error
    progress: bool | None = None  # progress bar; None: when stderr is a terminal

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= protocol.DEFAULT_MAX_BATCH:
            raise InvalidParameterError(f"batch size {self.batch_size}: between 1 and {protocol.DEFAULT_MAX_BATCH}")
        if self.concurrency < 1:
            raise InvalidParameterError(f"concurrency {self.concurrency}: at least 1")


def _load(item: Item, options: PredictOptions) -> bytes:
    if item.size is not None and item.size > options.max_image_bytes:
        raise FetchError(f"the image is {item.size} bytes; the limit is {options.max_image_bytes} bytes (not sent)")
    data = item.load(options.max_image_bytes)
    if len(data) > options.max_image_bytes:
        raise FetchError(f"the image is {len(data)} bytes; the limit is {options.max_image_bytes} bytes (not sent)")
    return data


def score_batch(
    scorer: Scorer, items: Sequence[Item], options: PredictOptions, sleep: Callable[[float], None] = time.sleep
) -> list[Row]:
    """Read, hash and score ``items`` (one batch); one row per item, in order."""
    data: list[bytes] = []
    rows: list[Row | None] = []
    for item in items:
        try:
            blob = with_retries(partial(_load, item, options), options.retry, "fetch", sleep)
        except (FetchError, TransientError) as exc:
            rows.append(Row(item.source, error=str(exc)))
            data.append(b"")
            continue
        rows.append(None)
        data.append(blob)
    todo = [i for i, row in enumerate(rows) if row is None]
    for group in _requests(todo, [len(d) for d in data], options.max_request_bytes):
        answers = score_images(scorer, [data[i] for i in group], options.retry, sleep)
        for i, answer in zip(group, answers, strict=True):
            digest = hashlib.sha256(data[i]).hexdigest()
            if isinstance(answer, str):
                rows[i] = Row(items[i].source, digest, error=answer)
            else:
                rows[i] = Row(items[i].source, digest, answer.probability, answer.label, answer.confidence,
                              answer.model_version, answer.ai_declared, answer.c2pa, answer.provenance_generator,
                              answer.verdict_source or protocol.PIXELS)  # fmt: skip
    return [row for row in rows if row is not None]


@dataclass
class Summary:
    """What a run did."""

    out: Path
    scored: int = 0  # rows with a prediction
    errors: int = 0  # rows with an error
    skipped: int = 0  # sources a previous run had written
    seconds: float = 0.0  # wall time of the scoring
    model_versions: set[str] = field(default_factory=set)
    error_counts: Counter[str] = field(default_factory=Counter)  # rows per error message
    stopped: str | None = None  # why the run stopped early (the server stayed unavailable)

    @property
    def images_per_second(self) -> float:
        return (self.scored + self.errors) / self.seconds if self.seconds > 0 else 0.0

    def text(self) -> str:
        versions = ", ".join(sorted(self.model_versions)) or "-"
        line = (
            f"{self.out}: scored {self.scored}, errors {self.errors}, skipped {self.skipped} (scored before); "
            f"{self.images_per_second:.1f} images/s over {self.seconds:.1f} s; model version {versions}"
        )
        for message, count in self.error_counts.most_common(5):
            line += f"\n  {count:>6} x {message}"
        return line + (f"\nstopped early: {self.stopped}" if self.stopped else "")


def predict_batch(
    sources: Sequence[str | Item],
    out: Path,
    scorer: Scorer,
    options: PredictOptions = PredictOptions(),
    fmt: str | None = None,
    s3: S3Settings | None = None,
) -> Summary:
    """Score every image of ``sources`` (strings, or items from ``expand_sources``) with ``scorer`` into ``out``,
    skipping the sources a previous run wrote there. When the server stays unavailable the run stops early: the rows
    of finished batches are written and ``summary.stopped`` says why."""
    items = [s for s in sources if isinstance(s, Item)]
    items += expand_sources([s for s in sources if isinstance(s, str)], s3)
    writer = open_writer(out, fmt)
    summary = Summary(out)
    try:
        if options.retry_errors and (dropped := writer.drop_errors()):
            log.info("predict_retrying_errors", rows=dropped)
        done = writer.done()
        todo = [item for item in items if item.source not in done]
        summary.skipped = len(items) - len(todo)
        _run(todo, scorer, writer, options, summary)
    finally:
        writer.close()
    log.info("predict_finished", scored=summary.scored, errors=summary.errors, skipped=summary.skipped,
             seconds=round(summary.seconds, 2), stopped=summary.stopped)  # fmt: skip
    return summary


def _run(todo: list[Item], scorer: Scorer, writer: ResultWriter, options: PredictOptions, summary: Summary) -> None:
    batches = iter([todo[i : i + options.batch_size] for i in range(0, len(todo), options.batch_size)])
    show = sys.stderr.isatty() if options.progress is None else options.progress
    started = time.perf_counter()
    pending: set[Future[list[Row]]] = set()

    def record(rows: list[Row]) -> None:
        writer.write(rows)
        for row in rows:
            if row.error is None:
                summary.scored += 1
                summary.model_versions.add(str(row.model_version))
            else:
                summary.errors += 1
                summary.error_counts[row.error] += 1
        bar.update(len(rows))

    with (
        ThreadPoolExecutor(options.concurrency, thread_name_prefix="predict") as pool,
        tqdm(total=len(todo), unit="img", disable=not show, smoothing=0.1) as bar,
    ):
        try:
            while True:
                while len(pending) < 2 * options.concurrency and (batch := next(batches, None)) is not None:
                    pending.add(pool.submit(score_batch, scorer, batch, options))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: f.exception() is not None):  # results before failures
                    record(future.result())
        except ServingUnavailableError as exc:
            for future in pending:
                future.cancel()
            for future in pending:  # batches already in flight still count when they finish
                if not future.cancelled() and future.exception() is None:
                    record(future.result())
            summary.stopped = str(exc)
            log.error("predict_stopped", error=str(exc))
        except BaseException:
            for future in pending:  # stop at once: a wrong model name, Ctrl-C
                future.cancel()
            raise
        finally:
            summary.seconds = time.perf_counter() - started


def run_predict(
    sources: Sequence[str],
    out: Path,
    url: str,
    model: str,
    protocol: str,
    options: PredictOptions,
    s3: S3Settings | None,
    fmt: str | None = None,
    timeout: float = 60.0,
) -> Summary:
    """The served model at ``url`` (checked ready first) scores ``sources`` into ``out``."""
    items: list[str | Item] = list(expand_sources(sources, s3))
    scorer = TritonScorer(url, model, protocol, timeout)
    try:
        wait_until_ready(scorer, options.retry)
    except ServingUnavailableError as exc:
        raise ServingUnavailableError(f"model {model!r} at {url} ({protocol}) is not ready: {exc}") from exc
    return predict_batch(items, out, scorer, options, fmt)


@stage
def batch_predict(
    source: str,
    url: str,
    predictions: Output[Dataset],
    model_name: str = "apd-detector",
    protocol: str = "rest",
    concurrency: int = 8,
    batch_size: int = 8,
) -> str:
    """Score every image below an S3 prefix with the served detector (KServe v2), one Parquet row per image.

    Args:
        source: ``s3://bucket/prefix`` of the images (endpoint and credentials from ``APD_S3__*``).
        url: The model server: ``http://host[:port]`` (v2 REST) or ``host:port`` (v2 gRPC).
        predictions: Parquet with ``source, sha256, probability, label, confidence, model_version, ai_declared,
            c2pa, provenance_generator, verdict_source, error``.
        model_name: The served model's name.
        protocol: ``rest`` (v2 REST, binary-data extension) or ``grpc`` (v2 gRPC).
        concurrency: Requests in flight at once.
        batch_size: Images per request (at most 32).

    Returns:
        The run's summary (scored, errors, images/s, model version).
    """
    from pathlib import Path

    from components.common.logging import configure_logging
    from components.common.settings import Settings
    from components.predict import PredictOptions, run_predict

    settings = Settings()
    configure_logging(settings.logging)
    options = PredictOptions(
        batch_size=batch_size, concurrency=concurrency, max_image_bytes=settings.images.max_bytes, progress=False
    )
    summary = run_predict([source], Path(predictions.path), url, model_name, protocol, options, settings.s3, "parquet")
    if summary.stopped:
        raise RuntimeError(f"batch scoring stopped early: {summary.stopped}")
    predictions.metadata.update(
        {
            "format": "parquet",
            "source": source,
            "rows": summary.scored + summary.errors,
            "scored": summary.scored,
            "errors": summary.errors,
            "model_versions": sorted(summary.model_versions),
            "images_per_second": round(summary.images_per_second, 1),
        }
    )
    return summary.text()
