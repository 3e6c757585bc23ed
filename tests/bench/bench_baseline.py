"""`apd serve` against a plain KServe model server with ONNX Runtime, on equal footing: same workers, same client.

The plain server (``PlainOnnxModel`` below) is what a KServe user writes in an afternoon: a ``kserve.Model`` that
takes v2 BYTES, decodes each JPEG with PIL's draft mode, resizes and centre-crops it, runs the model's ONNX
export in ONNX Runtime and answers the probability. It takes base64 in JSON over REST (raw bytes through the
binary-data extension make KServe 0.21 answer 500). No result cache, no provenance, no metrics of its own.

Equal work: besides the model as registered (native resolution, up to K crops per image: K inferences where the
plain server does one), `apd serve` serves a copy of it in the legacy resize mode, one crop per image: the plain
server's preprocessing (the same draft decode, resize and crop) and one inference. Every server runs two REST
workers of one thread each on the 2 cores, the result cache off (the client repeats one image).

Cells: 2 MP JPEG, concurrency 16 (and 4), REST with base64 JSON (the plain server's only way) and, for `apd serve`,
raw bytes through the binary-data extension; each cell ``--repeats`` times (the workers share connections, not
requests, so one run can land unevenly: the CPU split between the two workers is printed), the median taken.
Printed: images/s, p50 latency, server CPU ms per image (all processes), the worker split, and the ratio to the
plain server's median on the same protocol and concurrency.

Run with ``make bench-serving`` (after tests/bench/bench_serving.py) or alone: ``python tests/bench/bench_baseline.py``.
Prints figures, asserts nothing.
"""

import argparse
import base64
import contextlib
import io
import json
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.bench.bench_serving import (  # noqa: E402 (the repository on the path first)
    _jpegs,
    _split,
    load,
    model_folder,
    process_cpu,
    serving,
    started,
    with_preprocessing,
)
from tests.helpers.net import free_port  # noqa: E402

NAME = "apd-detector"  # both servers answer under the same name, so that one client serves both


class PlainOnnxModel(kserve.Model):  # type: ignore[misc]
    """The plain server's model: draft decode, resize, centre crop, ONNX Runtime; base64 or raw v2 BYTES in."""

    def __init__(self, model_dir: str, threads: int) -> None:
        super().__init__(NAME)
        prep = json.loads((Path(model_dir) / "config.json").read_text())["model"]["preprocessing"]
        self.side = prep["image_size"]
        self.resized = int(self.side / prep["crop_fraction"])
        self.mean = np.array(prep["mean"], dtype=np.float32).reshape(3, 1, 1)
        self.std = np.array(prep["std"], dtype=np.float32).reshape(3, 1, 1)
        self.onnx, self.threads = f"{model_dir}/model.onnx", threads
        self.session: Any = None
        self.ready = True

    def __getstate__(self) -> dict[str, Any]:
        """KServe pickles the model into each REST worker, which opens its own session on first use."""
        return {**self.__dict__, "session": None}

    def _tensor(self, data: bytes) -> np.ndarray:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (self.resized, self.resized))
        image = image.convert("RGB")
        scale = self.resized / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        left, top = (image.width - self.side) // 2, (image.height - self.side) // 2
        pixels = np.asarray(image.crop((left, top, left + self.side, top + self.side)), dtype=np.float32)
        return np.asarray((pixels.transpose(2, 0, 1) / 255 - self.mean) / self.std, dtype=np.float32)

    async def predict(self, payload: InferRequest, headers: Any = None, response_headers: Any = None) -> Any:
        if self.session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            self.session = ort.InferenceSession(self.onnx, options)
        images = [base64.b64decode(x) if isinstance(x, str) else x for x in payload.inputs[0].data]
        batch = np.stack([self._tensor(data) for data in images])
        logits = self.session.run(None, {"images": batch})[0].reshape(len(images), -1)[:, 0]
        probs = (1 / (1 + np.exp(-logits))).astype(np.float32).tolist()
        output = InferOutput("probability", [len(probs)], "FP32", data=probs)
        return InferResponse(payload.id or str(uuid.uuid4()), NAME, [output])


@contextlib.contextmanager
def plain_serving(model_dir: str, workers: int) -> Iterator[tuple[int, int]]:
    """The plain server with ``workers`` REST processes sharing the 2 cores; yields (http, grpc)."""
    http, grpc = free_port(), free_port()
    command = [sys.executable, __file__, "--plain", model_dir, str(2 // workers),
               "--http_port", str(http), "--grpc_port", str(grpc), "--workers", str(workers)]  # fmt: skip
    with started(command, None, http):
        yield http, grpc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0, help="load time per cell")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell (the median is compared)")
    parser.add_argument("--plain", nargs=2, metavar=("MODEL_DIR", "THREADS"), help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()  # the plain server's child leaves kserve's own arguments to kserve
    if args.plain:
        kserve.ModelServer().start([PlainOnnxModel(args.plain[0], int(args.plain[1]))])
        return

    from components.common.logging import configure_logging
    from components.common.settings import Settings

    configure_logging(Settings().logging.model_copy(update={"level": "WARNING"}))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        image = _jpegs(root)["2 MP"]
        native, described = model_folder(root)
        resize = with_preprocessing(native, root, "resize", mode="resize", max_crops=1, crop_align=1)
        prep = json.loads((Path(native) / "config.json").read_text())["model"]["preprocessing"]
        servers = [
            ("plain KServe + ONNX Runtime", lambda: plain_serving(resize, 2), ("rest-json",)),
            ("apd serve, resize mode, onnxruntime", lambda: serving(resize, 2, "onnxruntime/fp32"),
             ("rest-json", "rest")),
            ("apd serve, resize mode, openvino", lambda: serving(resize, 2, "openvino/fp32"), ("rest-json", "rest")),
            (f"apd serve, native <= {prep['max_crops']} crops, openvino", lambda: serving(native, 2, "openvino/fp32"),
             ("rest-json", "rest")),
        ]  # fmt: skip
        print(f"model: {described}, {prep['image_size']} px; 2 MP JPEG; two REST workers x 1 thread each; "
              f"{args.repeats} runs of {args.seconds:.0f} s per cell, the median run shown")  # fmt: skip
        print(f"  {'server':<42} {'proto':<9} {'conc':>4} {'img/s':>7} {'runs img/s':>20} {'p50 ms':>7}"
              f" {'CPU ms/img':>10} {'workers':>8} {'vs plain':>8}")  # fmt: skip
        plain: dict[int, float] = {}  # the plain server's median images/s per concurrency
        for label, start, protocols in servers:
            with start() as (http, _):
                per_process = process_cpu(http)
                for protocol in protocols:
                    for concurrency in (16, 4):
                        runs = []
                        for _ in range(args.repeats):
                            before = per_process()
                            result = load(protocol, http, image, concurrency, args.seconds, 100_000)
                            after = per_process()
                            count = len(result["latencies"])
                            runs.append((count / result["wall"], result, sum(after) - sum(before), before, after))
                        runs.sort(key=lambda run: run[0])
                        rate, result, cpu, before, after = runs[len(runs) // 2]
                        base = plain.setdefault(concurrency, rate)  # the plain server's cells come first
                        lat = [x * 1000 for x in result["latencies"]]
                        print(
                            f"  {label:<42} {protocol:<9} {concurrency:>4} {rate:>7.1f}"
                            f" {' '.join(f'{r[0]:.1f}' for r in runs):>20} {statistics.median(lat):>7.1f}"
                            f" {cpu * 1000 / max(1, len(lat)):>10.2f} {_split(before, after):>8}"
                            f" {rate / base:>7.2f}x"
                        )


if __name__ == "__main__":
    main()
