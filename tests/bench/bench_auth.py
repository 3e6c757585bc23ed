"""What API keys cost `apd serve`, and whether its rate limit holds under overload (``make bench-auth``).

- Throughput: one 2 MP JPEG per request at concurrency 16, v2 REST (binary extension) and v2 gRPC (KServe's own
  stubs, the key as metadata), against two servers that differ only in their API keys: off, and on (one key in the
  file, rate limit high enough never to refuse, so every request runs the whole check: hash, constant-time compare,
  token bucket, counter). The cells alternate off/on ``--rounds`` times, so that a change in the shared machine's
  load falls on both; printed per round and summed, with on/off.
- The check alone, in this process: ``Guard.check`` (hash, constant-time compare with every stored hash, token
  bucket, counter) in microseconds per request, with 1 and with 1000 keys in the file: the figure that the served
  comparison, at a few percent of resolution on a shared machine, cannot show.
- Rate limit: a server whose keys get ``--rate`` requests/s (``--burst``), overloaded for ``--overload-seconds`` at
  concurrency ``--overload-concurrency`` by one key with a 0.3 MP JPEG (cheap to score: the limit, not the model, is
  the bottleneck); the accepted requests beyond the burst per second, against the configured rate, and the 429s.

The clients run in child processes (as in bench_serving.py) and share the 2 cores with the server. Uses the model of
bench_serving.py (the registered champion, else an untrained detector); the result cache is off. Prints figures,
asserts nothing. Quick look: ``--seconds 3 --rounds 1 --overload-seconds 5``.
"""

import argparse
import http.client
import json
import secrets
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.bench_serving import DEFAULT, _jpegs, _percentile, model_folder, serving  # noqa: E402

MODEL = "apd-detector"


def _rest_body(data: bytes) -> tuple[bytes, int]:
    """A v2 request of one BYTES image with the binary-data extension; (body, JSON header length)."""
    tensor = {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(data) + 4}}
    wanted = {"name": "probability", "parameters": {"binary_data": False}}
    header = json.dumps({"inputs": [tensor], "outputs": [wanted]}).encode()
    return header + struct.pack("<I", len(data)) + data, len(header)


def client(protocol: str, port: int, image: Path, concurrency: int, seconds: float, key: str) -> None:
    """Child process: ``concurrency`` threads, each with its own connection, send one image per request for
    ``seconds``; prints the answers' status counts, the accepted requests' latencies and the wall time."""
    data = image.read_bytes()
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def rest() -> None:
        body, json_length = _rest_body(data)
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(json_length)}
        headers |= {"X-API-Key": key} if key else {}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            conn.request("POST", f"/v2/models/{MODEL}/infer", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            with lock:
                statuses[str(response.status)] += 1
                if response.status == 200:
                    latencies.append(time.perf_counter() - started)

    def grpc_calls() -> None:
        import grpc
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

        tensor = pb.ModelInferRequest.InferInputTensor(
            name="image", datatype="BYTES", shape=[1], contents=pb.InferTensorContents(bytes_contents=[data])
        )
        request = pb.ModelInferRequest(model_name=MODEL, inputs=[tensor])
        metadata = [("x-api-key", key)] if key else []
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    stub.ModelInfer(request, metadata=metadata, timeout=60)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                with lock:
                    statuses[code] += 1
                    if code == "OK":
                        latencies.append(time.perf_counter() - started)

    wall0 = time.perf_counter()
    threads = [threading.Thread(target=rest if protocol == "rest" else grpc_calls) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"statuses": statuses, "latencies": latencies, "wall": time.perf_counter() - wall0}))


def load(protocol: str, port: int, image: Path, concurrency: int, seconds: float, key: str = "") -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--client", protocol, str(port), str(image), str(concurrency), str(seconds), key],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def check_cost(folder: Path, key: str, keys: int, calls: int = 20000) -> float:
    """Microseconds of one ``Guard.check`` of a valid key (the last of ``keys`` in the file), no rate limit hit."""
    from prometheus_client import CollectorRegistry
    from prometheus_client import Counter as PromCounter

    from components.common.settings import AuthSettings
    from serving.auth import Guard, key_line

    path = folder / f"keys-{keys}"
    others = "".join(key_line(f"k{i}", f"key-{i}") + "\n" for i in range(keys - 1))
    path.write_text(others + key_line("bench", key) + "\n")
    counter = PromCounter("apd_auth_requests_total", "bench", ["outcome"], registry=CollectorRegistry())
    guard = Guard(AuthSettings(enabled=True, keys_file=path, rate_per_second=1e9, burst=10**9), counter=counter)
    started = time.perf_counter()
    for _ in range(calls):
        guard.check(key)
    return (time.perf_counter() - started) / calls * 1e6


def _keys_env(folder: Path, key: str, rate: float, burst: int) -> dict[str, str]:
    from serving.auth import key_line

    keys = folder / f"keys-{rate:g}"
    keys.write_text(key_line("bench", key) + "\n")
    return {"APD_AUTH__ENABLED": "true", "APD_AUTH__KEYS_FILE": str(keys),
            "APD_AUTH__RATE_PER_SECOND": str(rate), "APD_AUTH__BURST": str(burst)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="load time of each throughput cell")
    parser.add_argument("--rounds", type=int, default=2, help="off/on alternations of the throughput cells")
    parser.add_argument("--rate", type=float, default=10.0, help="the overloaded key's requests/s")
    parser.add_argument("--burst", type=int, default=10, help="the overloaded key's burst")
    parser.add_argument("--overload-seconds", type=float, default=20.0, help="how long the key is overloaded")
    parser.add_argument("--overload-concurrency", type=int, default=32, help="the overload's concurrent requests")
    parser.add_argument("--client", nargs=6, metavar=("PROTOCOL", "PORT", "IMAGE", "CONCURRENCY", "SECONDS", "KEY"))
    args = parser.parse_args()
    if args.client:
        protocol, port, image, concurrency, seconds, key = args.client
        client(protocol, int(port), Path(image), int(concurrency), float(seconds), key)
        return

    from components.common.logging import configure_logging
    from components.common.settings import Settings

    configure_logging(Settings().logging.model_copy(update={"level": "WARNING"}))
    key = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = _jpegs(root)
        model_dir, described = model_folder(root)
        costs = {n: check_cost(root, key, n) for n in (1, 1000)}
        print("the check in-process, µs per request: " + ", ".join(f"{n} key(s) {c:.1f}" for n, c in costs.items()))
        print(f"model: {described}; server: apd serve, {DEFAULT}, 1 worker, result cache off")
        print(f"throughput, 2 MP JPEG, concurrency 16, {args.seconds:g} s a cell, keys off and on alternated:")
        totals: dict[tuple[str, bool], list[float]] = {}
        unlimited = _keys_env(root, key, 1e6, 1_000_000)  # every request checked, none refused
        with serving(model_dir, 1, DEFAULT) as off, serving(model_dir, 1, DEFAULT, env=unlimited) as on:
            for round_ in range(1, args.rounds + 1):
                for protocol in ("rest", "grpc"):
                    for keys_on, ports in ((False, off), (True, on)):
                        port = ports[0] if protocol == "rest" else ports[1]
                        result = load(protocol, port, images["2 MP"], 16, args.seconds, key if keys_on else "")
                        accepted = len(result["latencies"])
                        total = totals.setdefault((protocol, keys_on), [0.0, 0.0])
                        total[0] += accepted
                        total[1] += result["wall"]
                        lat = sorted(x * 1000 for x in result["latencies"])
                        print(f"  round {round_} {protocol:<4} keys {'on ' if keys_on else 'off'}: "
                              f"{accepted / result['wall']:6.1f} img/s, p50 {_percentile(lat, 0.5):6.1f} ms, "
                              f"answers {dict(result['statuses'])}")  # fmt: skip
        for protocol in ("rest", "grpc"):
            rate_off, rate_on = (totals[(protocol, on)][0] / totals[(protocol, on)][1] for on in (False, True))
            print(f"  {protocol:<4} all rounds: off {rate_off:6.1f} img/s, on {rate_on:6.1f} img/s, "
                  f"on/off {rate_on / rate_off:.3f} (target: >= 0.97)")  # fmt: skip

        limited = _keys_env(root, key, args.rate, args.burst)
        with serving(model_dir, 1, DEFAULT, env=limited) as (http_port, _):
            result = load("rest", http_port, images["0.3 MP"], args.overload_concurrency, args.overload_seconds, key)
        statuses, wall = result["statuses"], result["wall"]
        accepted, refused = statuses.pop("200", 0), statuses.pop("429", 0)
        measured = (accepted - args.burst) / wall
        print(f"rate limit: one key at {args.rate:g}/s (burst {args.burst}), 0.3 MP JPEG, concurrency "
              f"{args.overload_concurrency}, {wall:.1f} s: {accepted} accepted, {refused} refused with 429 "
              f"({refused / wall:.0f}/s), other answers {statuses}")  # fmt: skip
        print(f"  accepted beyond the burst: {measured:.2f}/s against {args.rate:g}/s configured: "
              f"{(measured / args.rate - 1) * 100:+.1f} % (target: within 5 %)")  # fmt: skip


if __name__ == "__main__":
    main()
