"""Objects on S3 through the minio client (``S3Settings.client()``): reading one whole, and what the client raises."""

import re
from typing import Any

from minio.error import MinioException, S3Error, ServerError
from urllib3.exceptions import HTTPError

from components.common.errors import DataSourceError

# What the minio client raises: S3 error answers (S3Error: no such key, access denied), answers that are not S3's
# (ServerError: a proxy's 5xx, a 403 without credentials), no connection or one lost mid-read (urllib3's HTTPError).
S3_ERRORS: tuple[type[Exception], ...] = (MinioException, HTTPError)


def describe(exc: Exception) -> str:
    """One of ``S3_ERRORS`` in a few words: the S3 error code and message, else the exception."""
    if isinstance(exc, S3Error):
        return f"{exc.code} {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def read_object(client: Any, bucket: str, key: str) -> bytes:
    """The whole object ``bucket/key``; its connection goes back to the pool, read or not. Raises one of
    ``S3_ERRORS``."""
    response = client.get_object(bucket, key)
    try:
        return bytes(response.read())
    finally:
        response.close()
        response.release_conn()


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is the store's or the connection's (worth retrying) rather than the object's: every error
    but an S3 error answer (no such key, access denied) or an answer the client cannot read."""
    return not isinstance(exc, MinioException) or isinstance(exc, ServerError)


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix with a trailing slash, or "" for the whole bucket)."""
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if match is None:
        raise DataSourceError(f"bad S3 URI {uri!r}; expected s3://bucket/prefix")
    bucket, prefix = match.groups()
    return bucket, prefix.rstrip("/") + "/" if prefix else ""
