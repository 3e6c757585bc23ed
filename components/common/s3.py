"""Objects on S3 through the minio client (``S3Settings.client()``): reading one whole (or only while it is the
version a dataset recorded), S3 URIs, and what the client raises."""

import re
from typing import Any

from minio.error import MinioException, S3Error, ServerError
from urllib3.exceptions import HTTPError

from components.common.errors import DataSourceError
from components.common.settings import S3Settings

# URI schemes of objects on the configured store: KFP names its artifacts minio://bucket/key.
S3_SCHEMES = ("s3://", "minio://")
# S3 error codes of an object that is not there.
_GONE = frozenset({"NoSuchKey", "NoSuchBucket"})

# What the minio client raises: S3 error answers (S3Error: no such key, access denied), answers that are not S3's
# (ServerError: a proxy's 5xx, a 403 without credentials), no connection or one lost mid-read (urllib3's HTTPError).
S3_ERRORS: tuple[type[Exception], ...] = (MinioException, HTTPError)


def describe(exc: Exception) -> str:
    """One of ``S3_ERRORS`` in a few words: the S3 error code and message, else the exception."""
    if isinstance(exc, S3Error):
        return f"{exc.code} {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def read_object(client: Any, bucket: str, key: str, etag: str = "") -> bytes:
    """The whole object ``bucket/key``; its connection goes back to the pool, read or not. With ``etag``, only that
    version: the GET carries ``If-Match``, so the store refuses a changed object in the same request
    (``PreconditionFailed``). Raises one of ``S3_ERRORS``."""
    response = client.get_object(bucket, key, request_headers={"If-Match": f'"{etag}"'} if etag else None)
    try:
        return bytes(response.read())
    finally:
        response.close()
        response.release_conn()


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is the store's or the connection's (worth retrying) rather than the object's: every error
    but an S3 error answer (no such key, access denied) or an answer the client cannot read."""
    return not isinstance(exc, MinioException) or isinstance(exc, ServerError)


def read_recorded(client: Any, bucket: str, key: str, etag: str = "") -> bytes:
    """``read_object`` for data a dataset recorded: a changed (``etag`` no longer matches) or missing object, or one
    that cannot be read, is a DataSourceError naming it and saying to ingest again."""
    uri = f"s3://{bucket}/{key}"
    try:
        return read_object(client, bucket, key, etag)
    except S3Error as exc:
        if exc.code == "PreconditionFailed":
            raise DataSourceError(
                f"{uri} changed since it was ingested (its ETag is no longer {etag}); ingest the source again"
            ) from exc
        if exc.code in _GONE:
            raise DataSourceError(f"{uri} is missing ({exc.code}); ingest the source again") from exc
        raise DataSourceError(f"cannot read {uri}: {describe(exc)}") from exc
    except S3_ERRORS as exc:
        raise DataSourceError(f"cannot read {uri}: {describe(exc)}") from exc


def store_client(s3: S3Settings | None, uri: str) -> Any:
    """A client of the configured store for reading ``uri``; a DataSourceError when no S3 settings were given."""
    if s3 is None:
        raise DataSourceError(
            f"{uri} is on S3 but its reader was given no S3 settings; pass the store's (APD_S3__*) to read it"
        )
    return s3.client()


def is_s3_uri(text: str) -> bool:
    """Whether ``text`` names an object or prefix on the configured store (``s3://`` or KFP's ``minio://``)."""
    return text.startswith(S3_SCHEMES)


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` (or ``minio://``) -> (bucket, prefix with a trailing slash, or "" for the whole
    bucket)."""
    match = re.fullmatch(r"(?:s3|minio)://([^/]+)/?(.*)", uri)
    if match is None:
        raise DataSourceError(f"bad S3 URI {uri!r}; expected s3://bucket/prefix")
    bucket, prefix = match.groups()
    return bucket, prefix.rstrip("/") + "/" if prefix else ""
