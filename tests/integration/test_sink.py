"""`apd sink` as a real process on loopback, fed KServe-shaped CloudEvents over HTTP, writing to a real S3 server
(moto): records, pairing, duplicates, timeouts, bad events, a crash with a full write-ahead log, S3 outages and a
write-ahead log that cannot be written."""

import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest
from minio import Minio
from moto.server import ThreadedMotoServer

from components.common.features import CATEGORICAL_FEATURES, FEATURE_NAMES
from components.common.settings import S3Settings
from tests.helpers.events import ce_headers, v1_request, v1_response, v2_request, v2_response
from tests.helpers.images import encode
from tests.helpers.net import free_port, wait_until_up
from tests.helpers.servers import empty_s3_server

pytestmark = pytest.mark.integration

BUCKET = "apd-payloads"
COLUMNS = [
    "event_id",
    "image_index",
    "time",
    "inference_service",
    "namespace",
    "endpoint",
    "model_name",
    "model_version",
    "probability",
    "predicted_label",
    "confidence",
    "ai_declared",
    "c2pa",
    "provenance_generator",
    "verdict_source",
    *FEATURE_NAMES,
    *CATEGORICAL_FEATURES,
    "image_sha256",
    "decode_error",
    "paired",
]
FAST = {  # short timers so that the tests take seconds
    "FLUSH_SECONDS": "0.3",
    "PAIR_TIMEOUT_SECONDS": "1",
    "BACKOFF_SECONDS": "0.1",
    "BACKOFF_MAX_SECONDS": "0.5",
    "MAX_RETRIES": "3",
    "WORKERS": "0",
}
JPEG = encode("JPEG", (64, 48), seed=3)


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:  # runs in the child before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


class SinkProcess:
    """`apd sink` in a subprocess on a free loopback port."""

    def __init__(self, tmp: Path, s3: S3Settings, wal: Path, file_limit: int | None = None, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "APD_S3__ENDPOINT": s3.endpoint,
            "APD_S3__ACCESS_KEY": s3.access_key or "",
            "APD_S3__SECRET_KEY": s3.secret_key or "",
            "APD_SINK__WAL_DIR": str(wal),
            "APD_LOGGING__FORMAT": "json",
            **{f"APD_SINK__{k}": v for k, v in {**FAST, **settings}.items()},
        }
        self.log_path = tmp / f"sink-{self.port}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "components.cli", "sink", "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_limit_file_size(file_limit) if file_limit else None,  # noqa: PLW1509 (no threads here)
            )
        wait_until_up(self.process, self.log_path, f"{self.url}/healthz", seconds=60, poll=0.1)

    def post(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(f"{self.url}/", data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def metric(self, name: str) -> float:
        """One sample of /metrics, e.g. ``apd_sink_rejected_total{reason="invalid_json"}`` (0 when absent)."""
        text = urllib.request.urlopen(f"{self.url}/metrics", timeout=10).read().decode()
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
        return values[0] if values else 0.0

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=60)


def read_records(s3: S3Settings, bucket: str = BUCKET) -> tuple[pd.DataFrame, list[str]]:
    """Every record the sink wrote, and the keys of its files."""
    client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
    if not client.bucket_exists(bucket):
        return pd.DataFrame(columns=COLUMNS), []
    keys = [o.object_name or "" for o in client.list_objects(bucket, prefix="records/", recursive=True)]
    frames = []
    for key in keys:
        response = client.get_object(bucket, key)
        frames.append(pq.read_table(io.BytesIO(response.read())).to_pandas())
        response.close()
        response.release_conn()
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)), keys


def wait_for_records(s3: S3Settings, count: int, bucket: str = BUCKET, seconds: float = 120) -> pd.DataFrame:
    deadline = time.monotonic() + seconds
    while True:
        records, _ = read_records(s3, bucket)
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def of(records: pd.DataFrame, ce_id: str) -> pd.DataFrame:
    return records[records["event_id"] == ce_id].sort_values("image_index").reset_index(drop=True)


# The moto servers of one process share their buckets: each test below that counts everything has its own bucket.
@pytest.fixture(scope="module")
def module_s3() -> Iterator[S3Settings]:
    with empty_s3_server() as settings:
        yield settings


@pytest.fixture(scope="module")
def sink(module_s3: S3Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SinkProcess]:
    """One sink for the tests that only add events with their own ids (its feature workers are real processes)."""
    tmp = tmp_path_factory.mktemp("sink")
    process = SinkProcess(tmp, module_s3, tmp / "wal", WORKERS="1")
    yield process
    process.stop()


def test_request_and_response_become_one_record_per_image(sink: SinkProcess, module_s3: S3Settings) -> None:
    corrupt = JPEG[: len(JPEG) // 2]
    assert sink.post(ce_headers("pair-v1"), v1_request(JPEG, corrupt)) == (200, {"status": "stored", "id": "pair-v1"})
    response = v1_response(0.9, 0.2, version="4", declared=("Adobe Firefly",))
    assert sink.post(ce_headers("pair-v1", "response"), response)[0] == 200
    # v2, on the canary, response first
    response = v2_response(0.3, version="5", declared=("Midjourney",))
    assert sink.post(ce_headers("pair-v2", "response", "canary"), response)[0] == 200
    assert sink.post(ce_headers("pair-v2", endpoint="canary"), v2_request(JPEG))[0] == 200
    # a model server from before the provenance evidence
    assert sink.post(ce_headers("pair-old"), v1_request(JPEG))[0] == 200
    assert sink.post(ce_headers("pair-old", "response"), v1_response(0.6, with_provenance=False))[0] == 200

    records = wait_for_records(module_s3, 4)
    assert list(records.columns) == COLUMNS
    v1 = of(records, "pair-v1")
    assert v1["image_index"].tolist() == [0, 1]
    assert v1["probability"].tolist() == [0.9, 0.2]
    assert v1["predicted_label"].tolist() == ["ai_generated", "real"]
    assert set(v1["model_version"]) == {"4"}
    assert set(v1["model_name"]) == {"apd-detector"}  # v1 responses carry none: the InferenceService's name
    assert v1["paired"].tolist() == [True, True]
    assert (v1.loc[0, "width"], v1.loc[0, "height"], v1.loc[0, "format"]) == (64.0, 48.0, "JPEG")
    assert pd.isna(v1.loc[0, "decode_error"])
    assert "truncated or corrupt" in v1.loc[1, "decode_error"]  # kept, not dropped
    assert pd.isna(v1.loc[1, "brightness"])
    assert str(v1.loc[0, "time"]) == "2026-03-04 05:06:07.123456+00:00"  # the request's ce-time
    provenance = ["ai_declared", "c2pa", "provenance_generator", "verdict_source"]
    assert v1[provenance].values.tolist() == [
        [True, "valid", "Adobe Firefly", "provenance"],
        [False, "absent", None, "pixels"],
    ]
    v2 = of(records, "pair-v2")
    assert (v2.loc[0, "endpoint"], v2.loc[0, "model_version"], v2.loc[0, "probability"]) == ("canary", "5", 0.3)
    assert bool(v2.loc[0, "paired"])
    assert v2.loc[0, "brightness"] > 0
    assert v2.loc[0, provenance].tolist() == [True, "valid", "Midjourney", "provenance"]
    assert of(records, "pair-old").loc[0, provenance].isna().all()  # null, not False: nothing was said
    _, keys = read_records(module_s3)
    assert any(k.startswith("records/date=2026-03-04/model=apd-detector/version=4/part-") for k in keys)
    assert any(k.startswith("records/date=2026-03-04/model=apd-detector/version=5/part-") for k in keys)


def test_duplicates_are_written_once(sink: SinkProcess, module_s3: S3Settings) -> None:
    before = sink.metric("apd_sink_duplicates_total")
    for _ in range(3):  # resent, e.g. by a proxy's retry
        sink.post(ce_headers("dup"), v1_request(JPEG))
        sink.post(ce_headers("dup", "response"), v1_response(0.6))
    assert sink.post(ce_headers("dup"), v1_request(JPEG))[1]["status"] == "duplicate"
    records = wait_for_records(module_s3, 1)
    time.sleep(1)  # longer than a flush: a second copy would be there by now
    records, _ = read_records(module_s3)
    assert len(of(records, "dup")) == 1
    assert sink.metric("apd_sink_duplicates_total") - before == 5


def test_halves_without_partner_are_written_after_the_timeout(sink: SinkProcess, module_s3: S3Settings) -> None:
    before = sink.metric("apd_sink_unpaired_total")
    sink.post(ce_headers("alone-request"), v1_request(JPEG))  # the model answered 400: KServe logs no response
    sink.post(ce_headers("alone-response", "response"), v2_response(0.8, version="6"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        records, _ = read_records(module_s3)
        if len(of(records, "alone-request")) and len(of(records, "alone-response")):
            break
        time.sleep(0.2)
    request, response = of(records, "alone-request"), of(records, "alone-response")
    assert not request.loc[0, "paired"]
    assert pd.isna(request.loc[0, "probability"])
    assert pd.isna(request.loc[0, "model_version"])
    assert pd.isna(request.loc[0, "ai_declared"])
    assert request.loc[0, "width"] == 64.0
    assert not response.loc[0, "paired"]
    assert (response.loc[0, "probability"], response.loc[0, "model_version"]) == (pytest.approx(0.8), "6")
    assert pd.isna(response.loc[0, "width"])
    assert sink.metric("apd_sink_unpaired_total") - before == 2


# Each bad event: (headers, body, status, reason).
BAD = [
    pytest.param({"content-type": "application/json"}, v1_request(JPEG), 400, "not_a_cloudevent", id="plain-post"),
    pytest.param(ce_headers("b1", **{"ce-type": "dev.example.other"}), b"{}", 400, "unknown_type", id="other-type"),
    pytest.param(ce_headers("b2"), b"not json", 400, "invalid_json", id="not-json"),
    pytest.param(ce_headers("b3"), b'{"rows": []}', 400, "invalid_request", id="not-v1-v2"),
    pytest.param(ce_headers("b4", "response"), b'{"predictions": []}', 400, "invalid_response", id="no-predictions"),
]


@pytest.mark.parametrize(("headers", "body", "status", "reason"), BAD)
def test_bad_events_get_4xx_and_the_sink_keeps_working(
    sink: SinkProcess, module_s3: S3Settings, headers: dict[str, str], body: bytes, status: int, reason: str
) -> None:
    metric = f'apd_sink_rejected_total{{reason="{reason}"}}'
    before = sink.metric(metric)
    got, answer = sink.post(headers, body)
    assert (got, answer["reason"]) == (status, reason)
    assert "the sink takes" in answer["error"] or "expected" in answer["error"]  # says what is accepted
    assert sink.metric(metric) - before == 1
    ce_id = f"after-{reason}"
    assert sink.post(ce_headers(ce_id), v1_request(JPEG))[0] == 200
    assert sink.post(ce_headers(ce_id, "response"), v1_response(0.1))[0] == 200
    deadline = time.monotonic() + 20
    while not len(of(read_records(module_s3)[0], ce_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(of(read_records(module_s3)[0], ce_id)) == 1


@pytest.mark.slow
def test_a_crash_loses_nothing_the_log_holds(tmp_path: Path, s3_server: S3Settings) -> None:
    wal = tmp_path / "wal"
    first = SinkProcess(tmp_path, s3_server, wal, BUCKET="crash", FLUSH_SECONDS="3600", FLUSH_RECORDS="100000")
    for i in range(20):
        assert first.post(ce_headers(f"c{i}"), v1_request(JPEG))[0] == 200
        if i % 2 == 0:  # the odd ones have no response yet
            assert first.post(ce_headers(f"c{i}", "response"), v1_response(0.5))[0] == 200
    first.stop(kill=True)  # SIGKILL: nothing was uploaded, nothing flushed in an orderly way
    assert read_records(s3_server, "crash")[1] == []
    assert list(wal.glob("wal-*.log"))

    second = SinkProcess(tmp_path, s3_server, wal, BUCKET="crash", PAIR_TIMEOUT_SECONDS="30")
    assert second.post(ce_headers("c0"), v1_request(JPEG))[1]["status"] == "duplicate"  # known from the log
    for i in range(1, 20, 2):  # the responses come after the restart: still paired
        assert second.post(ce_headers(f"c{i}", "response"), v1_response(0.5))[0] == 200
    records = wait_for_records(s3_server, 20, "crash")
    assert sorted(records["event_id"]) == sorted(f"c{i}" for i in range(20))
    assert records["paired"].all()
    deadline = time.monotonic() + 15  # the log empties once everything is on S3
    while list(wal.glob("wal-*.log")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert second.metric("apd_sink_wal_events") == 0
    second.stop()

    third = SinkProcess(tmp_path, s3_server, wal, BUCKET="crash")
    assert third.post(ce_headers("c3", "response"), v1_response(0.5))[1]["status"] == "duplicate"  # written ids
    third.stop()
    assert len(read_records(s3_server, "crash")[0]) == 20


@pytest.mark.slow
def test_s3_outage_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    port = free_port()
    s3 = S3Settings(endpoint=f"127.0.0.1:{port}", access_key="test-access", secret_key="test-secret")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    sink = SinkProcess(tmp_path, s3, tmp_path / "wal", BUCKET="outage", KEEP_IMAGES="true", FLUSH_RECORDS="7")
    server.stop()  # S3 goes away: events are still accepted
    for i in range(30):
        assert sink.post(ce_headers(f"o{i}"), v1_request(encode("JPEG", (40, 40), seed=i)))[0] == 200
        assert sink.post(ce_headers(f"o{i}", "response"), v1_response(0.4))[0] == 200
    deadline = time.monotonic() + 20
    while sink.metric("apd_sink_s3_errors_total") < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sink.metric("apd_sink_s3_errors_total") >= 3
    assert sink.metric("apd_sink_wal_events") == 60
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)  # back on the same port
    server.start()
    try:
        records = wait_for_records(s3, 30, "outage")
        time.sleep(1)
        records, _ = read_records(s3, "outage")
        assert sorted(records["event_id"]) == sorted(f"o{i}" for i in range(30))  # each once
        client = Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False)
        images = {o.object_name for o in client.list_objects("outage", prefix="images/", recursive=True)}
        assert images == {f"images/{sha}.jpeg" for sha in records["image_sha256"]}
        assert sink.metric("apd_sink_records_written_total") == 30
    finally:
        sink.stop()
        server.stop()


def test_a_log_that_cannot_be_written_answers_503(tmp_path: Path, s3_server: S3Settings) -> None:
    # Files of the sink process may not grow past 64 KiB: the log's segment fills up after a few events.
    sink = SinkProcess(tmp_path, s3_server, tmp_path / "wal", file_limit=64 * 1024, BUCKET="full")
    body = v1_request(encode("JPEG", (128, 128), seed=9))  # about 20 KB
    statuses = [sink.post(ce_headers(f"f{i}"), body)[0] for i in range(6)]
    assert 503 in statuses
    assert statuses[: statuses.index(503)] == [200] * statuses.index(503)
    assert sink.metric('apd_sink_rejected_total{reason="wal_unavailable"}') >= 1
    failed = statuses.index(503)
    # The log moved on to a fresh segment: the logger's next event, or this one sent again, is stored.
    assert sink.post(ce_headers(f"f{failed}"), body)[0] == 200
    sink.stop()
