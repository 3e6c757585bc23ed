"""The payload records: one row per served image, written by the sink (``apd sink``) and read by the drift job.

The one home of their layout: the Parquet schema, and where a record lies on S3,
``<prefix>/date=YYYY-MM-DD/model=<name>/version=<version>/part-<id>.parquet``, with the model name and version
made safe for an object key the same way when writing and when searching.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import NamedTuple

import pyarrow as pa

from components.common.features import CATEGORICAL_FEATURES, FEATURE_NAMES

FEATURE_COLUMNS = (*FEATURE_NAMES, *CATEGORICAL_FEATURES)
PREDICTION_COLUMNS = ("probability", "predicted_label", "confidence")
PROVENANCE_COLUMNS = ("ai_declared", "c2pa", "provenance_generator", "verdict_source")
# One row per image. Readers take columns by name; the provenance columns are absent from files written before
# the sink recorded them.
RECORD_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("image_index", pa.int32()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("inference_service", pa.string()),
        ("namespace", pa.string()),
        ("endpoint", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("probability", pa.float64()),
        ("predicted_label", pa.string()),
        ("confidence", pa.string()),
        ("ai_declared", pa.bool_()),  # the provenance evidence of the response (null: a server without it)
        ("c2pa", pa.string()),
        ("provenance_generator", pa.string()),
        ("verdict_source", pa.string()),
        *[(name, pa.float64()) for name in FEATURE_NAMES],
        *[(name, pa.string()) for name in CATEGORICAL_FEATURES],
        ("image_sha256", pa.string()),
        ("decode_error", pa.string()),
        ("paired", pa.bool_()),
    ]
)

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


class Partition(NamedTuple):
    """The folder of a record: its UTC date, model name and model version."""

    date: str  # YYYY-MM-DD (UTC) of the records' time
    model: str
    version: str

    def prefix(self, root: str) -> str:
        """``<root>/date=.../model=.../version=.../`` with the name and version made key-safe."""
        parts = [f"date={self.date}", f"model={key_segment(self.model)}", f"version={key_segment(self.version)}"]
        return join_key(root, *parts) + "/"


def key_segment(value: str) -> str:
    """A model name or version as one S3 key segment: anything outside ``[A-Za-z0-9._@+-]`` becomes ``_``."""
    return _UNSAFE.sub("_", value) or "unknown"


def join_key(*parts: str) -> str:
    """S3 key parts joined with single slashes (empty parts and outer slashes dropped)."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def record_key(root: str, partition: Partition, name: str) -> str:
    """Where one Parquet file of ``partition`` lies."""
    return partition.prefix(root) + f"part-{name}.parquet"


def window_prefixes(root: str, model: str, version: str, start: datetime, end: datetime) -> list[str]:
    """The folders that can hold records of ``model`` ``version`` in [start, end): one per UTC date."""
    last = (end - timedelta(microseconds=1)).date()
    days: list[date] = [start.date() + timedelta(days=n) for n in range((last - start.date()).days + 1)]
    return [Partition(f"{day:%Y-%m-%d}", model, version).prefix(root) for day in days]
