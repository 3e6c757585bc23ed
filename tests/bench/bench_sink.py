"""Benchmark of the payload sink (`apd sink`): real HTTP load on loopback, KServe-shaped CloudEvents.

Run with ``make bench-sink`` (``python tests/bench/bench_sink.py [--pairs 5000] [--connections 8]``); prints figures,
asserts nothing. The sink runs as its own process with its default settings (but a 1 s flush), an S3 server (moto)
runs in this process, and the client in a third process: a thread per connection, each with its own keep-alive
connection (http.client). Every request event carries one real 256x256 JPEG (crops of scikit-image's bundled
photographs); every tenth pair sends its response first.

1. Throughput: N pairs as fast as the client can send them: accepted events/s, accept latency, the time until every
   record is on S3, and S3 read back: every pair exactly once, paired.
2. S3 outage: pairs at a fixed rate; the S3 server stops for 30 s in the middle and comes back on the same port.
   Read back: every pair exactly once. (moto keeps its objects in this process, so what was written before the
   outage is still there after it: the outage is a real one for the sink, connections refused.)
"""

import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow.parquet as pq
from minio import Minio
from moto.server import ThreadedMotoServer
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.helpers.net import free_port, wait_until_up  # noqa: E402 (the repository on the path first)

REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"
ACCESS, SECRET = "bench-access", "bench-secret"


# ---------------------------------------------------------------- client (its own process)


def _jpegs(count: int) -> list[bytes]:
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(0)
    images = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(200, min(photo.shape[:2])))
        y, x = (int(rng.integers(0, photo.shape[d] - side + 1)) for d in (0, 1))
        crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((256, 256), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def _headers(ce_id: str, kind: str) -> dict[str, str]:
    return {
        "ce-id": ce_id,
        "ce-type": REQUEST if kind == "request" else RESPONSE,
        "ce-specversion": "1.0",
        "ce-source": "http://localhost:9081/",
        "ce-time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ce-inferenceservicename": "apd-detector",
        "ce-namespace": "apd",
        "ce-endpoint": "default",
        "ce-component": "predictor",
        "Content-Type": "application/json",
    }


def client(port: int, pairs: int, connections: int, rate: float, prefix: str) -> dict[str, Any]:
    """Send ``pairs`` request/response pairs over ``connections`` keep-alive connections; ``rate`` pairs/s (0: max)."""
    requests = [
        json.dumps({"instances": [{"image": {"b64": base64.b64encode(j).decode()}}]}).encode() for j in _jpegs(64)
    ]
    response = json.dumps(
        {"predictions": [{"probability": 0.8, "label": "ai_generated", "confidence": "high", "model_version": "1"}]}
    ).encode()
    counter, lock = iter(range(pairs)), threading.Lock()
    latencies: list[list[float]] = [[] for _ in range(connections)]
    failures: list[int] = [0] * connections
    started = time.perf_counter()

    def work(slot: int) -> None:
        connection = HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            if rate:  # open loop: pair i is due at i / rate
                delay = started + index / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            ce_id = f"{prefix}-{index}"
            events = [(ce_id, "request", requests[index % len(requests)]), (ce_id, "response", response)]
            for ce, kind, body in events[::-1] if index % 10 == 0 else events:
                sent = time.perf_counter()
                connection.request("POST", "/", body=body, headers=_headers(ce, kind))
                answer = connection.getresponse()
                answer.read()
                latencies[slot].append(time.perf_counter() - sent)
                failures[slot] += answer.status != 200

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    usage = os.times()
    every = sorted(x for slot in latencies for x in slot)
    return {
        "events": len(every),
        "failed": sum(failures),
        "seconds": seconds,
        "p50_ms": 1000 * every[len(every) // 2],
        "p99_ms": 1000 * every[int(len(every) * 0.99)],
        "mean_ms": 1000 * statistics.fmean(every),
        "cpu_seconds": usage.user + usage.system,
    }


# ---------------------------------------------------------------- the bench process


class Sink:
    def __init__(self, tmp: Path, s3_port: int, bucket: str) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "APD_S3__ENDPOINT": f"127.0.0.1:{s3_port}",
            "APD_S3__ACCESS_KEY": ACCESS,
            "APD_S3__SECRET_KEY": SECRET,
            "APD_SINK__BUCKET": bucket,
            "APD_SINK__WAL_DIR": str(tmp / f"wal-{bucket}"),
            "APD_SINK__FLUSH_SECONDS": "1",
            "APD_LOGGING__LEVEL": "WARNING",
            "APD_LOGGING__FORMAT": "json",
        }
        self.log = (tmp / f"sink-{bucket}.log").open("wb")
        command = [sys.executable, "-m", "components.cli", "sink", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until_up(self.process, Path(self.log.name), f"http://127.0.0.1:{self.port}/healthz", seconds=60, poll=0.1)
        self.ps = psutil.Process(self.process.pid)

    def cpu_seconds(self) -> tuple[float, float]:
        """CPU time of the sink process and of its feature workers."""
        main = self.ps.cpu_times()
        workers = 0.0
        for process in self.ps.children(recursive=True):
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            workers += times.user + times.system
        return main.user + main.system, workers

    def rss_mib(self) -> float:
        return sum(p.memory_info().rss for p in [self.ps, *self.ps.children(recursive=True)]) / 2**20

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read().decode()
        return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), 0.0)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def run_client(port: int, pairs: int, connections: int, rate: float, prefix: str) -> subprocess.Popen[str]:
    arguments = ["client", "--port", str(port), "--pairs", str(pairs), "--connections", str(connections)]
    arguments += ["--rate", str(rate), "--prefix", prefix]
    return subprocess.Popen([sys.executable, __file__, *arguments], stdout=subprocess.PIPE, text=True)


def client_result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate()
    return dict(json.loads(out.strip().splitlines()[-1]))


def wait_written(sink: Sink, records: int, timeout: float) -> float | None:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if sink.metric("apd_sink_records_written_total") >= records:
            return time.perf_counter()
        time.sleep(0.2)
    return None


def read_back(s3_port: int, bucket: str, prefix: str, pairs: int) -> str:
    client = Minio(f"127.0.0.1:{s3_port}", access_key=ACCESS, secret_key=SECRET, secure=False)
    ids: list[str] = []
    unpaired = files = 0
    for item in client.list_objects(bucket, prefix="records/", recursive=True):
        response = client.get_object(bucket, item.object_name or "")
        table = pq.read_table(io.BytesIO(response.read()), columns=["event_id", "paired"])
        response.close()
        response.release_conn()
        ids += [i for i in table.column("event_id").to_pylist() if i.startswith(prefix + "-")]
        unpaired += table.column("paired").to_pylist().count(False)
        files += 1
    expected = {f"{prefix}-{i}" for i in range(pairs)}
    lost, duplicated = len(expected - set(ids)), len(ids) - len(set(ids))
    return f"{len(ids)} records in {files} files: lost {lost}, duplicated {duplicated}, unpaired {unpaired}"


def throughput(tmp: Path, s3_port: int, pairs: int, connections: int) -> None:
    sink = Sink(tmp, s3_port, "bench")
    client_process = run_client(sink.port, pairs, connections, 0, "t")
    (main_before, workers_before), started = sink.cpu_seconds(), time.perf_counter()
    result = client_result(client_process)
    load_end = time.perf_counter()
    main_load, workers_load = (
        now - before for now, before in zip(sink.cpu_seconds(), (main_before, workers_before), strict=True)
    )
    done = wait_written(sink, pairs, timeout=600)
    main_all, workers_all = (
        now - before for now, before in zip(sink.cpu_seconds(), (main_before, workers_before), strict=True)
    )
    load = load_end - started
    print(f"1. throughput: {pairs} pairs ({result['events']} events), {connections} connections, no pacing")
    print(
        f"   accepted: {result['events'] / result['seconds']:.0f} events/s ({result['failed']} not 200), "
        f"accept latency p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, mean {result['mean_ms']:.1f} ms"
    )
    if done is None:
        print("   NOT everything reached S3 within 600 s")
    else:
        print(
            f"   everything on S3 {done - started:.1f} s after the first event "
            f"({done - load_end:.1f} s after the last; {pairs / (done - started):.0f} records/s end to end)"
        )
    print(f"   read back: {read_back(s3_port, 'bench', 't', pairs)}")
    print(
        f"   CPU while sending: client {result['cpu_seconds']:.1f} s ({100 * result['cpu_seconds'] / load:.0f} % of a "
        f"core), sink process {main_load:.1f} s ({100 * main_load / load:.0f} %), feature workers {workers_load:.1f} s "
        f"({100 * workers_load / load:.0f} %)"
    )
    print(
        f"   CPU in all: sink process {main_all:.1f} s ({1000 * main_all / (2 * pairs):.2f} ms per event), feature "
        f"workers {workers_all:.1f} s ({1000 * workers_all / pairs:.1f} ms per image); "
        f"sink RSS {sink.rss_mib():.0f} MiB"
    )
    sink.stop()


def outage(tmp: Path, s3_port: int, server: ThreadedMotoServer, rate: float, seconds: float, down: float) -> None:
    sink = Sink(tmp, s3_port, "outage")
    pairs = int(rate * seconds)
    client_process = run_client(sink.port, pairs, 8, rate, "o")
    started = time.perf_counter()
    time.sleep((seconds - down) / 2)
    server.stop()
    stopped = time.perf_counter()
    print(f"2. S3 outage: {pairs} pairs at {rate:.0f} pairs/s; S3 stopped at {stopped - started:.1f} s")
    time.sleep(down)
    written_at_restart = sink.metric("apd_sink_records_written_total")
    in_log = sink.metric("apd_sink_wal_events")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port)
    server.start()
    back = time.perf_counter()
    result = client_result(client_process)
    load_end = time.perf_counter()
    done = wait_written(sink, pairs, timeout=600)
    print(
        f"   S3 back at {back - started:.1f} s: {in_log:.0f} events were waiting in the write-ahead log, "
        f"{written_at_restart:.0f} records written before; {sink.metric('apd_sink_s3_errors_total'):.0f} failed uploads"
    )
    print(
        f"   accepted: {result['events']} events, {result['failed']} not 200, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms; the load ended at {load_end - started:.1f} s"
    )
    if done is None:
        print("   NOT everything reached S3 within 600 s")
    else:
        print(f"   everything on S3 {done - back:.1f} s after S3 came back")
    print(f"   read back: {read_back(s3_port, 'outage', 'o', pairs)}")
    sink.stop()
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "client"])
    parser.add_argument("--pairs", type=int, default=5000, help="pairs of the throughput run")
    parser.add_argument("--connections", type=int, default=32, help="client connections (KServe: 5 per pod)")
    parser.add_argument("--port", type=int, help="(client) the sink's port")
    parser.add_argument("--rate", type=float, default=0, help="(client) pairs per second; 0: as fast as possible")
    parser.add_argument("--prefix", default="t", help="(client) ce-id prefix")
    parser.add_argument("--outage-rate", type=float, default=150, help="pairs/s during the outage scenario")
    parser.add_argument("--outage-seconds", type=float, default=30, help="how long S3 is down")
    parser.add_argument("--skip-outage", action="store_true")
    args = parser.parse_args()
    if args.role == "client":
        print(json.dumps(client(args.port, args.pairs, args.connections, args.rate, args.prefix)))
        return
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        s3_port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=s3_port)
        server.start()
        print(f"payload sink benchmark, {os.cpu_count()} cores; S3: moto on 127.0.0.1:{s3_port}")
        throughput(tmp, s3_port, args.pairs, args.connections)
        if not args.skip_outage:
            outage(tmp, s3_port, server, args.outage_rate, args.outage_seconds + 20, args.outage_seconds)
        else:
            server.stop()


if __name__ == "__main__":
    main()
