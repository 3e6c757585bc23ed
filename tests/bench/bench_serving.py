"""Serving benchmark: `apd serve` under load from real clients over loopback, against raw in-process throughput.

- Images: real JPEGs (a Debian wallpaper photograph, resized) of 0.3, 2 and 12 megapixels.
- Served: v2 REST (tritonclient.http, raw bytes through the binary-data extension) and v2 gRPC (tritonclient.grpc,
  raw bytes) at concurrency 1, 4 and 16, by one worker with both cores and by two REST workers with one each;
  p50/p95/p99 latency and images/s per cell. The client runs in its own process (tritonclient.grpc cannot share
  one with kserve) and shares the 2 cores: its CPU use is printed.
- Raw: the same model's decode + preprocess + inference in this process, batch 1, with every inference variant
  (runtime/precision, ``common.runtimes``; the server runs OpenVINO fp32 by default) including torch eager; and
  inference alone at batch 1 and 16. Variants the model's evaluation did not enable are measured too, marked so.
- Served variants beyond the default: each extra variant the model enables (bf16, int8), 2 MP, REST and gRPC.
- Each one-worker cell splits the server's CPU per image: decode + preprocess, inference, provenance (the server's
  own stage timers in /metrics) and the rest, which is KServe's protocol and HTTP handling.
- Served cells run with the result cache off (the load client repeats one image, which the cache would answer
  without scoring), and with it on for the default variant's 2 MP REST cells ("hits"); each cell also prints the
  server's CPU milliseconds per image (all its processes).
- Result cache: what a hit costs in ``DetectorModel.detect`` in this process (the sha256 of the bytes, the lookup,
  the counters: everything the server does for a cached image beyond the protocol), CPU ms p50/p99, against a miss.
- Provenance: what reading the evidence (C2PA, XMP, EXIF, PNG text) costs per image in this process, p50/p99, on
  the 2 MP JPEG without metadata and on the same JPEG signed with C2PA Content Credentials (a test CA, trusted);
  the signed JPEG is also served, next to the plain one.

Run with ``make bench-serving``; prints figures, asserts nothing. Uses the registered champion when there is one
(``models:/apd-detector@champion`` in the local MLflow), else an untrained detector of the same architecture.
``--max-crops K`` serves a copy of it that scores at most K native-resolution crops per image (same weights), to
measure what K costs.
"""

import argparse
import base64
import contextlib
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from components.common.runtimes import EXACT_VARIANTS, VARIANTS  # noqa: E402 (the repository on the path first)
from tests.helpers.net import free_port  # noqa: E402

PHOTO = Path("/usr/share/backgrounds/Dragonfly_by_Bolly.jpg")  # 4224x3168, from lomiri-wallpapers-16.04
SIZES = {"0.3 MP": (640, 480), "2 MP": (1632, 1224), "12 MP": (4000, 3000)}
CONCURRENCY = (1, 4, 16)
DEFAULT = "openvino/fp32"  # what `apd serve` runs unless told otherwise


def client(protocol: str, port: int, image: Path, concurrency: int, seconds: float, max_requests: int) -> None:
    """Child process: ``concurrency`` threads, each with its own client, send one image per request: ``protocol``
    rest (raw bytes through the binary-data extension), rest-json (base64 in JSON) or grpc (raw bytes)."""
    import numpy as np

    data = image.read_bytes()
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    budget = [max_requests]

    def worker() -> None:
        if protocol == "grpc":
            import tritonclient.grpc as tc
        else:
            import tritonclient.http as tc
        conn = tc.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = tc.InferInput("image", [1], "BYTES")
        outputs = [tc.InferRequestedOutput("probability")]
        extra = {}
        if protocol == "rest-json":  # base64 in a JSON body: all a plain KServe server takes over REST
            tensor.set_data_from_numpy(np.array([base64.b64encode(data)], dtype=np.object_), binary_data=False)
            outputs = [tc.InferRequestedOutput("probability", binary_data=False)]
            extra = {"headers": {"Content-Type": "application/json"}}
        else:
            tensor.set_data_from_numpy(np.array([data], dtype=np.object_))  # raw bytes (binary extension over REST)
        while time.perf_counter() < deadline:
            with lock:
                if budget[0] == 0:
                    return
                budget[0] -= 1
            started = time.perf_counter()
            conn.infer("apd-detector", [tensor], outputs=outputs, request_id="bench", **extra)
            with lock:
                latencies.append(time.perf_counter() - started)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall0
    print(json.dumps({"latencies": latencies, "wall": wall, "client_cpu": (time.process_time() - cpu0) / wall}))


def _jpegs(folder: Path) -> dict[str, Path]:
    from PIL import Image

    photo = Image.open(PHOTO).convert("RGB")
    paths = {}
    for name, size in SIZES.items():
        buf = io.BytesIO()
        photo.resize(size, Image.Resampling.LANCZOS).save(buf, format="JPEG", quality=90)
        paths[name] = folder / f"{name.replace(' ', '')}.jpg"
        paths[name].write_bytes(buf.getvalue())
    return paths


def _signed(image: Path, folder: Path) -> tuple[Path, Path]:
    """``image`` signed with C2PA Content Credentials (AI-generated) under a test CA; and that CA's PEM file."""
    from tests.helpers.provenance_files import c2pa_signed, signing_ca

    signed = folder / f"{image.stem}-c2pa.jpg"
    signed.write_bytes(
        c2pa_signed(image.read_bytes(), "image/jpeg", ("c2pa.created", "trainedAlgorithmicMedia", "bench"))
    )
    anchors = folder / "anchors.pem"
    anchors.write_bytes(signing_ca().ca_pem)
    return signed, anchors


def provenance_cost(images: dict[str, Path], anchors: Path, calls: int) -> dict[str, tuple[float, float, str]]:
    """Milliseconds per image of the provenance reader, (p50, p99), and the C2PA state it read."""
    from components.common.provenance import ProvenanceReader
    from components.common.settings import ProvenanceSettings

    reader = ProvenanceReader(ProvenanceSettings(trust_anchors=anchors))
    costs = {}
    for name, path in images.items():
        data = path.read_bytes()
        state = reader.read(data).c2pa
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            reader.read(data)
            times.append((time.perf_counter() - started) * 1000)
        costs[name] = (statistics.median(times), _percentile(times, 0.99), state)
    return costs


def cache_cost(model_dir: str, images: dict[str, Path], hits: int, misses: int) -> dict[str, tuple[float, ...]]:
    """CPU milliseconds of ``DetectorModel.detect`` on one image in this process, the default variant: a result
    cache hit (p50, p99) and a miss (p50: decode, inference, provenance, stored)."""
    from components.common.settings import ImageLimits, ServingSettings
    from serving.detector import DetectorModel

    model = DetectorModel(ServingSettings(model_uri=model_dir), ImageLimits())  # the result cache on, by default
    model.load()
    costs = {}
    for name, path in images.items():
        data = path.read_bytes()
        scored = []
        for _ in range(misses):
            model.cache.clear()
            started = time.process_time()
            model.detect([data])
            scored.append((time.process_time() - started) * 1000)
        cached = []
        for _ in range(hits):
            started = time.process_time()
            model.detect([data])
            cached.append((time.process_time() - started) * 1000)
        costs[name] = (statistics.median(cached), _percentile(cached, 0.99), statistics.median(scored))
    return costs


def model_folder(folder: Path) -> tuple[str, str]:
    """The champion when one is registered locally, else an untrained detector packaged like a registered one."""
    from mlflow.exceptions import MlflowException

    from components.common.artifact import fetch_artifact
    from components.common.model_config import ModelConfig
    from components.common.settings import Settings
    from components.common.tracking import setup_tracking
    from tests.helpers.artifacts import detector, package_artifact

    settings = Settings()
    setup_tracking(settings.mlflow)
    try:
        return str(fetch_artifact(settings.serving.model_uri, folder / "champion")), settings.serving.model_uri
    except MlflowException:
        package_artifact(detector(ModelConfig()), folder / "untrained", dataset_version="bench", metrics={})
        return str(folder / "untrained"), "untrained tf_efficientnet_lite0"


def raw_throughput(model_dir: str, images: dict[str, Path], variant: str, rounds: int) -> dict[str, float]:
    """Images/s of decode + preprocess + inference at batch 1 in this process, and of inference alone at 1 and 16."""
    import numpy as np
    import torch

    from components.common.artifact import load_artifact
    from components.common.runtimes import open_engine
    from components.common.settings import ImageLimits, ServingSettings
    from serving.detector import DetectorModel

    model = DetectorModel(ServingSettings(model_uri=model_dir, runtime="torch"), ImageLimits())
    model.load()
    runtime, precision = variant.split("/")
    # Swapped in directly, so that variants the evaluation did not enable are measured as well.
    net = load_artifact(Path(model_dir))[0] if runtime == "torch" else None  # the torch runtime runs the checkpoint
    model.inference = open_engine(Path(model_dir), runtime, precision, torch.get_num_threads(), net)
    rates = {}
    for name, path in images.items():
        data = path.read_bytes()
        count = max(3, rounds // (4 if "12" in name else 1))
        model.score([data])
        started = time.perf_counter()
        for _ in range(count):
            model.score([data])
        rates[name] = count / (time.perf_counter() - started)
    assert model.config is not None
    side = model.config.model.preprocessing.image_size
    for batch in (1, 16):
        tensor = np.random.default_rng(0).random((batch, 3, side, side), dtype=np.float32)
        model.inference(tensor)
        count = max(2, rounds * 2 // batch)
        started = time.perf_counter()
        for _ in range(count):
            model.inference(tensor)
        rates[f"infer b{batch}"] = count * batch / (time.perf_counter() - started)
    return rates


def with_preprocessing(model_dir: str, folder: Path, name: str, **changes: Any) -> str:
    """A copy of the artifact, in ``folder/name``, whose preprocessing has ``changes`` (same weights)."""
    import dataclasses
    import shutil

    from components.common.artifact import CONFIG_FILE, WEIGHTS_FILE, load_artifact
    from components.common.model import save_checkpoint

    net, config = load_artifact(Path(model_dir))
    prep = dataclasses.replace(config.model.preprocessing, **changes)
    net.config = dataclasses.replace(config.model, preprocessing=prep)
    out = folder / name
    shutil.copytree(model_dir, out)
    save_checkpoint(net, out / WEIGHTS_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(dataclasses.replace(config, model=net.config).to_dict()))
    return str(out)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0, help="load time per cell")
    parser.add_argument("--max-requests", type=int, default=600, help="requests per cell at most")
    parser.add_argument("--max-crops", type=int, default=0, help="serve at most K crops per image (0: the model's)")
    parser.add_argument("--client", nargs=5, metavar=("PROTOCOL", "PORT", "IMAGE", "CONCURRENCY", "SECONDS"))
    args = parser.parse_args()
    if args.client:
        protocol, port, image, concurrency, seconds = args.client
        client(protocol, int(port), Path(image), int(concurrency), float(seconds), args.max_requests)
        return

    from components.common.logging import configure_logging
    from components.common.settings import Settings

    configure_logging(Settings().logging.model_copy(update={"level": "WARNING"}))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images = _jpegs(root)
        model_dir, described = model_folder(root)
        if args.max_crops:
            model_dir = with_preprocessing(model_dir, root, f"k{args.max_crops}", max_crops=args.max_crops)
        prep = json.loads((Path(model_dir) / "config.json").read_text())["model"]["preprocessing"]
        described += f"; preprocessing {prep.get('mode', 'resize')}, {prep['image_size']} px"
        described += f", up to {prep['max_crops']} crops" if prep.get("mode") == "native" else ""
        signed, anchors = _signed(images["2 MP"], root)
        provenance = provenance_cost({"2 MP": images["2 MP"], "2 MP C2PA": signed}, anchors, 300)
        raw = {v: raw_throughput(model_dir, images, v, 30) for v in VARIANTS if _has_files(model_dir, v)}
        cache = cache_cost(model_dir, {n: images[n] for n in ("2 MP", "12 MP")}, 300, 10)
        enabled = json.loads((Path(model_dir) / "config.json").read_text()).get("variants", EXACT_VARIANTS)
        print(f"model: {described}; server: apd serve (KServe ModelServer), default variant {DEFAULT}")
        print("raw in-process, images/s: decode + preprocess + inference at batch 1 per image size; inference alone")
        for variant, rates in raw.items():
            mark = "" if variant in enabled else "  (not enabled for this model)"
            print(f"  {variant:<17} " + "  ".join(f"{n}: {r:6.1f}" for n, r in rates.items()) + mark)
        print("provenance reader in-process, ms per image (300 calls): p50 / p99 (target p99: 2 ms plain, 20 ms C2PA)")
        for name, (p50, p99, state) in provenance.items():
            print(f"  {name:<10} {p50:6.2f} / {p99:6.2f}  (c2pa: {state})")
        print("result cache in-process, CPU ms per image in DetectorModel.detect (300 hits, 10 misses): hit p50 / p99,"
              " miss p50 (target: a hit < 1 ms beyond the protocol)")  # fmt: skip
        for name, (hit50, hit99, miss50) in cache.items():
            print(
                f"  {name:<10} cached request: {hit50:6.3f} / {hit99:6.3f} ms server CPU vs uncached {miss50:6.1f} ms"
            )
        print("served over loopback, one image per request (server CPU: ms per image, all its processes; with one"
              " worker, where that CPU went: decode + preprocess, inference x 2 threads, provenance, and the rest:"
              " KServe's protocol and HTTP)")  # fmt: skip
        print(f"  {'server':<44} {'proto':<5} {'image':<9} {'conc':>4} {'req':>5} {'img/s':>7} {'p50 ms':>7}"
              f" {'p95 ms':>7} {'p99 ms':>7} {'server CPU':>10} {'client CPU':>10} {'vs raw':>7}"
              f" {'CPU split':>9}  decode/infer/prov/rest ms")  # fmt: skip
        # The default variant with one worker using both cores (REST and gRPC), and with two REST worker processes
        # of one core each (KServe runs gRPC in the main process only); then every other enabled fast variant; the
        # result cache off. Last, the default variant with the cache on: every request after the first is a hit.
        extra = [v for v in enabled if v not in EXACT_VARIANTS]
        setups = [(DEFAULT, 1, ("rest", "grpc"), {**images, "2 MP C2PA": signed}, False)]
        setups += [(DEFAULT, 2, ("rest",), images, False)]
        setups += [(v, 1, ("rest", "grpc"), {"2 MP": images["2 MP"]}, False) for v in extra]
        setups += [(DEFAULT, 1, ("rest",), {"2 MP": images["2 MP"]}, True)]
        for variant, workers, protocols, sized, cached in setups:
            with serving(model_dir, workers, variant, cache=cached) as (http, grpc):
                cpu, processes = server_cpu(http), process_cpu(http)
                for protocol in protocols:
                    port = http if protocol == "rest" else grpc
                    for name, path in sized.items():
                        for concurrency in CONCURRENCY:
                            label = f"{variant}, {workers} worker{'s' if workers > 1 else ''} x {2 // workers} thr"
                            label += ", cache hits" if cached else ""
                            seconds = args.seconds * (2 if "12" in name else 1)
                            before, split_before = cpu(), processes()
                            stages_before = stage_seconds(http) if workers == 1 else None
                            result = load(protocol, port, path, concurrency, seconds, args.max_requests)
                            lat = [x * 1000 for x in result["latencies"]]
                            rate = len(lat) / result["wall"]
                            server_ms = (cpu() - before) * 1000 / max(1, len(lat))
                            print(
                                f"  {label:<44} {protocol:<5} {name:<9} {concurrency:>4} {len(lat):>5} {rate:>7.1f}"
                                f" {statistics.median(lat):>7.1f} {_percentile(lat, 0.95):>7.1f}"
                                f" {_percentile(lat, 0.99):>7.1f} {server_ms:>10.2f}"
                                f" {result['client_cpu'] * 100:>9.0f}%"
                                f" {rate / raw[variant][name.removesuffix(' C2PA')]:>6.2f}x"
                                f" {_split(split_before, processes()):>9}"
                                + (f"  {_stages(stages_before, stage_seconds(http), server_ms, 2)}"
                                   if stages_before is not None else "")
                            )  # fmt: skip


def _has_files(model_dir: str, variant: str) -> bool:
    from components.common.artifact import WEIGHTS_FILE
    from components.common.runtimes import INT8_FILE, ONNX_FILE

    runtime, precision = variant.split("/")
    needed = WEIGHTS_FILE if runtime == "torch" else INT8_FILE if precision == "int8" else ONNX_FILE
    return (Path(model_dir) / needed).exists()


def load(protocol: str, port: int, image: Path, concurrency: int, seconds: float, max_requests: int) -> dict:
    """Run the load client in a child process (tritonclient.grpc cannot share a process with kserve)."""
    done = subprocess.run(
        [sys.executable, __file__, "--max-requests", str(max_requests),
         "--client", protocol, str(port), str(image), str(concurrency), str(seconds)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def server_cpu(http: int) -> Callable[[], float]:
    """CPU seconds used so far by the `apd serve` on ``http`` and its worker processes."""
    per_process = process_cpu(http)
    return lambda: sum(per_process())


def process_cpu(http: int) -> Callable[[], list[float]]:
    """CPU seconds used so far by each process of the `apd serve` on ``http``: the main one (gRPC; REST too with
    one worker), then its children (the REST workers of ``--workers N``; KServe's multiprocessing helpers idle)."""
    import psutil  # KServe's dependency

    def serves(process: psutil.Process) -> bool:
        with contextlib.suppress(psutil.Error):  # a finished child not yet reaped
            return str(http) in process.cmdline()
        return False

    [server] = [p for p in psutil.Process().children(recursive=True) if serves(p)]

    def used() -> list[float]:
        return [t.user + t.system for t in (p.cpu_times() for p in [server, *server.children(recursive=True)])]

    return used


STAGES = {"decode": "apd_preprocess_seconds", "infer": "apd_inference_seconds", "prov": "apd_provenance_seconds"}


def stage_seconds(http: int) -> dict[str, float]:
    """The server's own stage timers so far (``/metrics`` histogram sums, seconds): decode + preprocess, inference
    (one batch per request here) and provenance, with ``images`` the number of images preprocessed."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=10) as response:
        text = response.read().decode()
    sums = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.endswith(("_sum", "_count")) and not sample.labels
    }
    found = {stage: sums.get(f"{metric}_sum", 0.0) for stage, metric in STAGES.items()}
    return {**found, "images": sums.get("apd_preprocess_seconds_count", 0.0)}


def _stages(before: dict[str, float], after: dict[str, float], server_ms: float, threads: int) -> str:
    """Where one image's server CPU went, ms: decode + preprocess, inference x its threads (it keeps them busy, so
    this bounds its CPU from above), provenance, and the rest (KServe's protocol and HTTP, logging, metrics)."""
    images = max(1.0, after["images"] - before["images"])
    ms = {stage: (after[stage] - before[stage]) * 1000 / images for stage in STAGES}
    rest = server_ms - ms["decode"] - ms["infer"] * threads - ms["prov"]
    return f"{ms['decode']:.1f}/{ms['infer'] * threads:.1f}/{ms['prov']:.1f}/{rest:.1f}"


def _split(before: list[float], after: list[float]) -> str:
    """How the CPU of one cell divided among the server's processes, busiest first ("52/47%"): with two REST
    workers, an even split means the connections were spread; 99/0% means one worker took them all."""
    used = sorted((b - a for a, b in zip(before, after, strict=False)), reverse=True)
    total = sum(used) or 1.0
    return "/".join(f"{100 * u / total:.0f}" for u in used if 100 * u / total >= 1) + "%"


@contextlib.contextmanager
def serving(
    model_dir: str, workers: int, variant: str, *, cache: bool = False, env: dict[str, str] | None = None
) -> Iterator[tuple[int, int]]:
    """`apd serve` of ``variant`` with ``workers`` processes sharing out the 2 cores; yields (http, grpc). The result
    cache is off unless ``cache``: a load client that repeats one image would otherwise measure cache hits. ``env``:
    more APD_* settings (tests/bench/bench_auth.py: API keys)."""
    http, grpc = free_port(), free_port()
    runtime, precision = variant.split("/")
    env = {**os.environ, "APD_LOGGING__LEVEL": "WARNING", "APD_SERVING__THREADS": str(2 // workers),
           "APD_SERVING__RUNTIME": runtime, "APD_SERVING__PRECISION": precision,
           "APD_CACHE__ENABLED": str(cache).lower(), **(env or {})}  # fmt: skip
    command = [sys.executable, "-m", "components.cli", "serve", "--model_uri", model_dir,
               "--http_port", str(http), "--grpc_port", str(grpc), "--workers", str(workers)]  # fmt: skip
    with started(command, env, http):
        yield http, grpc


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str] | None, http: int) -> Iterator[None]:
    """A model server started by ``command``, once its model ``apd-detector`` answers ready on ``http`` (at most
    a minute); stopped on leaving."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/apd-detector/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
