"""The payload records' layout: the sink writes a record where the drift job looks for it, whatever the name."""

from datetime import UTC, datetime

import pytest

from components.common.records import Partition, key_segment, record_key, window_prefixes
from serving.sink_store import Batch


@pytest.mark.parametrize(
    ("model", "version"),
    [("apd-detector", "7"), ("apd detector/eu", "7"), ("détecteur", "v1:canary"), ("", "")],
)
def test_the_sink_writes_where_the_drift_job_searches(model: str, version: str) -> None:
    written = Batch(Partition("2026-12-03", model or "unknown", version or "unknown")).key("records/")
    start, end = datetime(2026, 12, 2, 12, tzinfo=UTC), datetime(2026, 12, 3, 12, tzinfo=UTC)
    searched = window_prefixes("records", model or "unknown", version or "unknown", start, end)
    assert any(written.startswith(prefix) for prefix in searched), (written, searched)
    assert written.count("/") == 4  # records/date=/model=/version=/part-*.parquet: one segment per key


def test_unsafe_characters_become_underscores() -> None:
    assert key_segment("apd detector/eu:1") == "apd_detector_eu_1"
    assert key_segment("v1.2+local@x") == "v1.2+local@x"
    assert record_key("", Partition("2026-12-03", "m", "1"), "a") == "date=2026-12-03/model=m/version=1/part-a.parquet"


def test_a_window_spans_one_folder_per_utc_date() -> None:
    start, end = datetime(2026, 12, 1, 23, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC)  # end excluded
    assert window_prefixes("r", "m", "1", start, end) == [
        "r/date=2026-12-01/model=m/version=1/",
        "r/date=2026-12-02/model=m/version=1/",
    ]
