"""Reading the sink's records (an in-memory stand-in for the minio client): old files without the provenance
columns, and the flags that leave a record out."""

import io
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.records import RECORD_SCHEMA
from components.common.settings import S3Settings
from components.monitoring.records import _is_set, read_records
from tests.unit.monitoring.synthetic import records


class _Object:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class _Listed:
    def __init__(self, name: str) -> None:
        self.object_name = name


class _Bucket:
    """The two calls of the minio client that read_records makes, over Parquet files in memory."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def list_objects(self, bucket: str, prefix: str, recursive: bool) -> list[_Listed]:
        return [_Listed(key) for key in self.files if key.startswith(prefix)]

    def get_object(self, bucket: str, key: str, request_headers: dict[str, str] | None = None) -> _Object:
        return _Object(self.files[key])  # as minio's, which common.s3.read_object calls with request_headers


def _parquet(frame: pd.DataFrame, schema: pa.Schema) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), buffer)
    return buffer.getvalue()


def test_sink_files_without_the_provenance_columns_are_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files the sink wrote before it recorded the provenance evidence lack ai_declared: read as not declared."""
    frame = records(6, seed=13).drop(columns=["label"])
    frame["time"] = pd.Timestamp("2026-11-01T12:00:00Z")
    frame["endpoint"], frame["decode_error"], frame["paired"] = "default", None, True
    for name in RECORD_SCHEMA.names:
        if name not in frame:
            frame[name] = None
    new = frame.copy()
    new["ai_declared"] = [True, True, False, None, False, False]
    legacy = pa.schema(
        [f for f in RECORD_SCHEMA if f.name not in {"ai_declared", "c2pa", "provenance_generator", "verdict_source"}]
    )
    folder = "records/date=2026-11-01/model=m/version=1/"
    files = {
        f"{folder}part-old.parquet": _parquet(frame, legacy),
        f"{folder}part-new.parquet": _parquet(new, RECORD_SCHEMA),
    }
    bucket = _Bucket(files)

    def client(self: Any, http_client: Any = None) -> _Bucket:
        return bucket

    monkeypatch.setattr(S3Settings, "client", client)
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    usable, excluded = read_records(S3Settings(), "b", "records", "m", "1", "default", start, end)
    assert len(usable) == 12
    assert excluded == {"decode_error": 0, "unpaired": 0}
    assert usable["ai_declared"].eq(True).sum() == 2
    only_old = {k: v for k, v in files.items() if "old" in k}
    monkeypatch.setattr(bucket, "files", only_old)
    usable, _ = read_records(S3Settings(), "b", "records", "m", "1", "default", start, end)
    assert len(usable) == 6
    assert usable["ai_declared"].isna().all()


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pd.Series([True, False]), [True, False]),  # a boolean flag
        (pd.Series(["too_large", None, ""]), [True, False, False]),  # a reason string, or nothing
        (pd.Series([None, None], dtype=object), [False, False]),  # a column with no errors at all
    ],
)
def test_decode_error_flags(values: pd.Series, expected: list[bool]) -> None:
    assert _is_set(values).tolist() == expected
