"""Reading the payload sink's records of one model version and endpoint in a window from S3 (the layout is
``components.common.records``'): only the columns the drift job uses, usable records apart from the left out."""

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog

from components.common.errors import DataSourceError
from components.common.records import FEATURE_COLUMNS, PREDICTION_COLUMNS, RECORD_SCHEMA, window_prefixes
from components.common.s3 import S3_ERRORS, describe, read_object
from components.common.settings import S3Settings

log = structlog.get_logger(__name__)

RECORD_COLUMNS = (*PREDICTION_COLUMNS, *FEATURE_COLUMNS, "decode_error", "paired")  # read from the sink's files
# Read when a sink file has them, else null: files written before the sink recorded the provenance evidence lack them.
OPTIONAL_COLUMNS = {"ai_declared": RECORD_SCHEMA.field("ai_declared").type}
READ_THREADS = 8  # parallel S3 object downloads


def _read_part(  # noqa: PLR0913, PLR0917 - one S3 object and the window's filter
    client: Any, bucket: str, key: str, start: datetime, end: datetime, endpoint: str
) -> pa.Table:
    """The window's records of one endpoint in one sink file: only the columns the job uses (an optional column the
    file lacks comes back null)."""
    data = read_object(client, bucket, key)
    schema = pq.read_schema(pa.BufferReader(data))
    missing = sorted({*RECORD_COLUMNS, "time", "endpoint"} - set(schema.names))
    if missing:
        raise DataSourceError(
            f"s3://{bucket}/{key} lacks the columns {missing}: it was not written by the payload sink"
        )
    time_type = schema.field("time").type
    if getattr(time_type, "tz", None) is None:  # naive timestamps hold UTC
        start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    condition = (
        (pc.field("time") >= pa.scalar(start, type=time_type))
        & (pc.field("time") < pa.scalar(end, type=time_type))
        & (pc.field("endpoint") == endpoint)
    )
    optional = [name for name in OPTIONAL_COLUMNS if name in schema.names]
    table = pq.read_table(pa.BufferReader(data), columns=[*RECORD_COLUMNS, *optional], filters=condition)
    for name, column_type in OPTIONAL_COLUMNS.items():
        if name not in optional:
            table = table.append_column(pa.field(name, column_type), pa.nulls(table.num_rows, column_type))
    return table


def read_records(  # noqa: PLR0913, PLR0917 - the bucket and the window's filter
    s3: S3Settings,
    bucket: str,
    prefix: str,
    model_name: str,
    model_version: str,
    endpoint: str,
    start: datetime,
    end: datetime,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Usable records of one model version and endpoint in [start, end), and how many were left out and why."""
    client = s3.client()
    keys: list[str] = []
    try:
        for folder in window_prefixes(prefix, model_name, model_version, start, end):
            keys += [
                o.object_name
                for o in client.list_objects(bucket, prefix=folder, recursive=True)
                if o.object_name and o.object_name.endswith(".parquet")
            ]
        with ThreadPoolExecutor(READ_THREADS) as pool:
            tables = list(pool.map(lambda key: _read_part(client, bucket, key, start, end, endpoint), keys))
    except S3_ERRORS as exc:
        raise DataSourceError(
            f"cannot read the sink's records from s3://{bucket}/{prefix} at {s3.endpoint}: {describe(exc)} "
            "(check APD_SINK__BUCKET, APD_SINK__PREFIX and APD_S3__*)"
        ) from exc
    frame = (
        pa.concat_tables(tables, promote_options="permissive").to_pandas()
        if tables
        else pd.DataFrame({c: pd.Series(dtype=object) for c in (*RECORD_COLUMNS, *OPTIONAL_COLUMNS)})
    )
    decode_error = _is_set(frame["decode_error"])
    unpaired = ~frame["paired"].eq(True) & ~decode_error  # a missing flag counts as unpaired
    excluded = {"decode_error": int(decode_error.sum()), "unpaired": int(unpaired.sum())}
    columns = [*PREDICTION_COLUMNS, *FEATURE_COLUMNS, *OPTIONAL_COLUMNS]
    usable = frame.loc[~decode_error & ~unpaired, columns].reset_index(drop=True)
    log.info("drift_records_read", files=len(keys), records=len(usable), **excluded)
    return usable, excluded


def _is_set(column: pd.Series) -> pd.Series:
    """True where a flag column is set: a True boolean, or a non-empty reason string."""
    if pd.api.types.is_bool_dtype(column):
        return column.astype(bool)
    return column.notna() & (column.astype(str) != "")
