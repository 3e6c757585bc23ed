"""Logged records as the payload sink writes them: its Parquet schema, its S3 layout (one folder per UTC date,
model and version), for the drift job's integration test and benchmark; the records themselves come from
``tests.unit.monitoring.synthetic``."""

import uuid
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from minio import Minio

from components.common.records import RECORD_SCHEMA
from components.common.settings import S3Settings, SinkSettings
from tests.helpers.servers import MODEL

SINK = SinkSettings()  # the sink's default bucket and prefix


def sink_table(frame: pd.DataFrame, start: datetime, hours: float, endpoint: str, version: str, seed: int) -> pa.Table:
    """``frame``'s records as the payload sink writes them, spread at random over [start, start + hours)."""
    rng = np.random.default_rng(seed)
    n = len(frame)
    out = frame.drop(columns=["label"], errors="ignore").copy()
    seconds = np.sort(rng.uniform(0, hours * 3600, n)).round(6)  # the sink keeps microseconds
    out["time"] = pd.to_datetime(start) + pd.to_timedelta(seconds, unit="s").round("us")
    out["event_id"] = [str(uuid.UUID(int=int(rng.integers(2**63)))) for _ in range(n)]
    out["image_index"] = 0
    out["inference_service"], out["namespace"], out["endpoint"] = MODEL, "apd", endpoint
    out["model_name"], out["model_version"] = MODEL, version
    out["image_sha256"] = [f"{i:064x}" for i in rng.integers(0, 2**62, n)]
    out["decode_error"], out["paired"] = None, True
    defaults = {"ai_declared": False, "c2pa": "absent", "provenance_generator": None, "verdict_source": "pixels"}
    for name, value in defaults.items():
        if name not in out:
            out[name] = value
    return pa.Table.from_pandas(out[RECORD_SCHEMA.names], schema=RECORD_SCHEMA, preserve_index=False)


# The sink's schema before it recorded the provenance evidence: the drift job still reads such files.
LEGACY_SCHEMA = pa.schema(
    [f for f in RECORD_SCHEMA if f.name not in {"ai_declared", "c2pa", "provenance_generator", "verdict_source"}]
)


def put_records(s3: S3Settings, table: pa.Table, files: int = 3, schema: pa.Schema = RECORD_SCHEMA) -> int:
    """Upload ``table`` into the sink's layout (one folder per UTC date), ``files`` Parquet parts per date, written
    with ``schema``."""
    client = Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=False)
    if not client.bucket_exists(SINK.bucket):
        client.make_bucket(SINK.bucket)
    frame = table.to_pandas()
    written = 0
    for day, rows in frame.groupby(frame["time"].dt.strftime("%Y-%m-%d")):
        version = rows["model_version"].iloc[0]
        for part in np.array_split(np.arange(len(rows)), files):
            data = pa.Table.from_pandas(rows.iloc[part], schema=schema, preserve_index=False)
            buffer = pa.BufferOutputStream()
            pq.write_table(data, buffer, compression="zstd")
            body = buffer.getvalue().to_pybytes()
            key = f"{SINK.prefix}/date={day}/model={MODEL}/version={version}/part-{uuid.uuid4().hex}.parquet"
            client.put_object(SINK.bucket, key, pa.BufferReader(body), len(body))
            written += 1
    return written
