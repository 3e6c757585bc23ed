"""Batch prediction benchmark: `apd predict` on a folder of real 2 MP JPEGs, against the served rate of the same
server measured in the same run by the serving benchmark's own tritonclient load.

- Images: ``--images`` (300) JPEGs of 1632x1224 made from a Debian wallpaper photograph (as bench_serving's), each
  with a few pixels changed so that every file has its own sha256.
- Servers: `apd serve` (OpenVINO fp32, the default) with one worker using both cores, and with two REST workers of
  one core each, started by bench_serving's ``serving``; the model is bench_serving's ``model_folder`` (the local
  champion, else an untrained detector of the same architecture).
- Served rate: bench_serving's load client (one 2 MP image per request, REST and gRPC, concurrency 1, 4, 16);
  the best cell is the bar. Served cells and `apd predict` runs alternate for ``--rounds`` (3) rounds; every figure
  is the median of its rounds.
- `apd predict` (a separate process, as a user runs it) on the folder into a fresh CSV: REST at batch 8 and 1, gRPC
  at batch 8, concurrency 8. Its rate is the summary's (the scoring, after start-up); the rate over the whole process
  (Python's start-up included) is printed below it.
- Per cell also the CPU milliseconds per image of the server (its processes) and of the client, and the capacity
  they imply: 2 cores / (server + client CPU per image), the images/s of a CPU-bound pair with the cores to itself.
  Wall-clock rates swing with whatever else runs on a shared machine; CPU per image barely does, so the comparison
  with the best served cell is printed on both.

Run with ``make bench-predict`` (``python -m tests.bench.bench_predict``); prints figures, asserts nothing.
"""

import argparse
import io
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.bench_serving import CONCURRENCY, DEFAULT, PHOTO, SIZES, load, model_folder, server_cpu, serving

SIZE = SIZES["2 MP"]
CORES = 2  # what bench_serving sets the server up for; server and client share them


def catalogue(folder: Path, count: int) -> list[Path]:
    """``count`` 2 MP JPEGs of the same photograph, each with a different 4x4 block recoloured (distinct sha256)."""
    from PIL import Image

    photo = Image.open(PHOTO).convert("RGB").resize(SIZE, Image.Resampling.LANCZOS)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = photo.copy()
        x, y = (i * 37) % (SIZE[0] - 4), (i * 53) % (SIZE[1] - 4)
        image.paste((i % 256, (i * 7) % 256, (i * 13) % 256), (x, y, x + 4, y + 4))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        paths.append(folder / f"photo-{i:05d}.jpg")
        paths[-1].write_bytes(buf.getvalue())
    return paths


@dataclass
class Cell:
    """One measurement: images/s, and the CPU the server and the client spent per image."""

    rate: float
    server_ms: float
    client_ms: float
    overall: float = 0.0  # apd predict: images/s over the process's whole life (start-up included)

    @property
    def capacity(self) -> float:
        """Images/s that server and client could reach with the machine's cores to themselves (CPU-bound)."""
        return CORES * 1000 / (self.server_ms + self.client_ms)


def served(protocol: str, port: int, image: Path, concurrency: int, seconds: float, requests: int, cpu: Any) -> Cell:
    """bench_serving's load client: one image per request."""
    before = cpu()
    result = load(protocol, port, image, concurrency, seconds, requests)
    count = len(result["latencies"])
    if count == 0:  # the load client's threads die on errors: say so rather than divide by zero
        raise RuntimeError(f"no {protocol} request on port {port} succeeded")
    client = result["client_cpu"] * result["wall"]
    return Cell(count / result["wall"], (cpu() - before) * 1000 / count, client * 1000 / count)


def predict(folder: Path, out: Path, url: str, protocol: str, batch_size: int, concurrency: int, cpu: Any) -> Cell:
    """`apd predict` run as a user runs it, into a fresh file."""
    command = [sys.executable, "-m", "components.cli", "predict", str(folder), "--out", str(out), "--url", url,
               "--protocol", protocol, "--batch-size", str(batch_size), "--concurrency", str(concurrency)]  # fmt: skip
    before, server_before = resource.getrusage(resource.RUSAGE_CHILDREN), cpu()
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, "APD_LOGGING__LEVEL": "WARNING"}
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    match = re.search(r"scored (\d+), errors (\d+).*?([\d.]+) images/s", done.stdout)
    assert match is not None, done.stdout + done.stderr
    scored, errors = int(match[1]), int(match[2])
    assert errors == 0, done.stdout
    server_ms = (cpu() - server_before) * 1000 / scored
    return Cell(float(match[3]), server_ms, client * 1000 / scored, scored / wall)


def _wait_ready(http: int, seconds: float = 300) -> None:
    """bench_serving's ``serving`` waits 60 s at most; a loaded machine can take longer to load two workers."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/apd-detector/ready", timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _median(cells: list[Cell]) -> Cell:
    """Each figure's median over the rounds."""
    return Cell(
        *(statistics.median(getattr(c, f) for c in cells) for f in ("rate", "server_ms", "client_ms", "overall"))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=300, help="JPEGs in the catalogue")
    parser.add_argument("--seconds", type=float, default=5.0, help="load time per served cell")
    parser.add_argument("--max-requests", type=int, default=400, help="requests per served cell at most")
    parser.add_argument("--workers", default="1,2", help="server setups: worker processes, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each cell shows their median")
    args = parser.parse_args()

    from components.common.logging import configure_logging
    from components.common.settings import Settings

    configure_logging(Settings().logging.model_copy(update={"level": "WARNING"}))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        images = catalogue(root / "catalogue", args.images)
        model_dir, described = model_folder(root)
        size_mb = sum(p.stat().st_size for p in images) / len(images) / 1e6
        print(f"model: {described}; server: apd serve, {DEFAULT}")
        print(f"catalogue: {len(images)} JPEGs of {SIZE[0]}x{SIZE[1]} ({size_mb:.2f} MB each), made in "
              f"{time.perf_counter() - started:.0f} s")  # fmt: skip
        print(f"  {'server':<18} {'client':<34} {'img/s':>6} {'server CPU':>10} {'client CPU':>10} "
              f"{'2-core cap.':>11} {'vs best served':>14}")  # fmt: skip
        print(f"  {'':<18} {'':<34} {'':>6} {'ms/img':>10} {'ms/img':>10} {'img/s':>11} {'img/s, cap.':>14}")
        for workers in (int(w) for w in args.workers.split(",")):
            label = f"{workers} worker{'s' if workers > 1 else ''} x {2 // workers} thr"
            with serving(model_dir, workers, DEFAULT) as (http, grpc):
                _wait_ready(http)
                cpu = server_cpu(http)
                ports = {"rest": http} if workers > 1 else {"rest": http, "grpc": grpc}  # gRPC: main process only
                rounds: dict[str, list[Cell]] = {}
                runs = [("rest", 8), ("rest", 1)] + ([("grpc", 8)] if "grpc" in ports else [])
                for round_ in range(args.rounds):  # interleaved, so that a busy minute hits every cell alike
                    for protocol, port in ports.items():
                        for c in CONCURRENCY:
                            cell = served(protocol, port, images[0], c, args.seconds, args.max_requests, cpu)
                            rounds.setdefault(f"served {protocol} c={c}, 1 img/req", []).append(cell)
                    for protocol, batch in runs:
                        url = f"http://127.0.0.1:{http}" if protocol == "rest" else f"127.0.0.1:{grpc}"
                        out = root / f"results-{workers}-{protocol}-{batch}-{round_}.csv"
                        cell = predict(root / "catalogue", out, url, protocol, batch, 8, cpu)
                        rounds.setdefault(f"apd predict {protocol} b={batch} c=8", []).append(cell)
                cells = {name: _median(measured) for name, measured in rounds.items()}
                served_cells = [cell for name, cell in cells.items() if name.startswith("served")]
                best_rate = max(cell.rate for cell in served_cells)
                best_capacity = max(cell.capacity for cell in served_cells)
                for name, cell in cells.items():
                    versus = ""
                    if name.startswith("apd"):
                        versus = f"{cell.rate / best_rate:.2f}x, {cell.capacity / best_capacity:.2f}x"
                    print(f"  {label:<18} {name:<34} {cell.rate:>6.1f} {cell.server_ms:>10.1f} {cell.client_ms:>10.1f}"
                          f" {cell.capacity:>11.1f} {versus:>14}")  # fmt: skip
                    if name.startswith("apd"):
                        print(f"  {'':<18} {'  with start-up: ' + f'{cell.overall:.1f} img/s':<34}")


if __name__ == "__main__":
    main()
