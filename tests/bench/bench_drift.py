"""Benchmark of the drift job: 100,000 logged records against a registered model version's reference.

Run with ``python -m tests.bench.bench_drift`` (``--records``, ``--files``, ``--reference``); prints figures, asserts
nothing. The records are synthetic, with the value ranges of product photos
(``tests/unit/monitoring/synthetic.records``), written in the payload sink's Parquet schema and layout to a real S3
server (moto on loopback), as many files as the sink writes (it flushes every 2,000 records). The registry is MLflow
on SQLite; the version's artifact holds only the two files the drift job reads (config.json, reference.parquet).
Target: under 60 s on 2 cores.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from components.common.artifact import CONFIG_FILE, REFERENCE_FILE
from components.common.logging import configure_logging
from components.common.settings import DriftSettings, LoggingSettings, MlflowSettings
from components.monitoring.job import DriftJob, run_drift
from tests.helpers.artifacts import register_artifact
from tests.helpers.servers import MODEL, empty_s3_server
from tests.helpers.sink_records import SINK, put_records, sink_table
from tests.unit.monitoring.synthetic import CONFIG, NEW_UPLOAD_TOOL, records

START = datetime(2026, 11, 1, 12, tzinfo=UTC)  # a 24 h window over two UTC dates: two partitions


def _register(tmp: Path, tracking: MlflowSettings, reference_rows: int) -> None:
    """Version 1 of MODEL (alias champion): only the two files the drift job reads."""
    folder = tmp / "detector"
    folder.mkdir()
    (folder / CONFIG_FILE).write_text(json.dumps(CONFIG.to_dict()))
    records(reference_rows, seed=1).to_parquet(folder / REFERENCE_FILE)
    register_artifact(tracking, folder, MODEL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="logged records in the window")
    parser.add_argument("--files", type=int, default=50, help="Parquet files they are written to")
    parser.add_argument("--reference", type=int, default=2_000, help="reference rows (validation images)")
    args = parser.parse_args()
    configure_logging(LoggingSettings(level="WARNING"))
    with empty_s3_server() as s3, tempfile.TemporaryDirectory() as tmp:
        tracking = MlflowSettings(tracking_uri=f"sqlite:///{tmp}/mlflow.db", artifact_root=f"{tmp}/artifacts")
        _register(Path(tmp), tracking, args.reference)
        began = time.perf_counter()
        frame = records(args.records, seed=2, **NEW_UPLOAD_TOOL)
        written = put_records(s3, sink_table(frame, START, 24, "default", "1", seed=2), files=args.files // 2)
        print(
            f"setup: {args.records:,} records in {written} Parquet files on S3, {args.reference:,} reference rows"
            f" ({time.perf_counter() - began:.1f} s)"
        )
        print(f"{'run':<34} {'read':>7} {'evidently':>10} {'total':>7}  verdict")
        for label in ("in process, first (imports)", "in process, second"):
            job = DriftJob(DriftSettings(), s3, tracking, SINK, MODEL, start=START, end=START + timedelta(1))
            result = run_drift(job)
            s = result.seconds
            print(f"{label:<34} {s['read']:>7.2f} {s['evidently']:>10.2f} {s['total']:>7.2f}  {result.verdict}")
        env = os.environ | {
            "APD_S3__ENDPOINT": s3.endpoint,
            "APD_S3__ACCESS_KEY": str(s3.access_key),
            "APD_S3__SECRET_KEY": str(s3.secret_key),
            "APD_MLFLOW__TRACKING_URI": tracking.tracking_uri,
            "APD_MLFLOW__ARTIFACT_ROOT": tracking.artifact_root,
            "APD_LOGGING__LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "components.cli", "drift", "run", "--start", START.isoformat()]
        command += ["--end", (START + timedelta(1)).isoformat()]
        began = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - began
        print(f"{'apd drift run (new process)':<34} {'':>7} {'':>10} {wall:>7.2f}  exit code {done.returncode}")
        if done.returncode not in (0, 3):
            print(done.stderr[-3000:], file=sys.stderr)


if __name__ == "__main__":
    main()
