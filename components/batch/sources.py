"""Where the images come from: files, folders, ``.zip`` archives, ``s3://bucket/prefix``, ``.txt`` lists of http(s)
URLs and URLs given directly, each image an ``Item`` whose bytes are read when it is scored."""

import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from http.client import HTTPException
from pathlib import Path
from urllib.parse import urlsplit

from components.batch.failures import TransientError
from components.common.errors import DataSourceError, DetectorError
from components.common.settings import S3Settings

URL_LIST_SUFFIXES = (".txt", ".urls")


class FetchError(DetectorError):
    """An image that could not be read from its source (a URL, S3, a file); the message goes into its row."""


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
    from components.common.s3 import S3_ERRORS, is_transient, parse_uri, read_object

    bucket, prefix = parse_uri(uri)
    client = settings.client()  # endpoint, keys, TLS, region
    s3_failures: tuple[type[Exception], ...] = (*S3_ERRORS, OSError, HTTPException)  # and what urllib3 did not wrap

    def loader(key: str) -> Callable[[int], bytes]:
        def load(_: int) -> bytes:
            try:
                return read_object(client, bucket, key)
            except s3_failures as exc:
                if is_transient(exc):  # the store, not the object
                    raise TransientError(f"S3 read failed: {exc}", unavailable=False) from exc
                raise FetchError(f"cannot read s3://{bucket}/{key}: {exc}") from exc  # no such key, access denied

        return load

    try:
        objects = [o for o in client.list_objects(bucket, prefix=prefix, recursive=True) if not o.is_dir]
    except s3_failures as exc:
        raise DataSourceError(f"cannot list {uri} on {settings.endpoint}: {exc}") from exc
    keys = sorted((o.object_name or "", o.size) for o in objects)
    return [
        Item(f"s3://{bucket}/{key}", size, loader(key))
        for key, size in keys
        if not key.endswith("/") and _visible(key[len(prefix) :].split("/"))  # folder markers, hidden files
    ]


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
