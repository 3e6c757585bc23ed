"""Inference runtimes: the same network run by torch, ONNX Runtime or OpenVINO, at fp32, bf16 or int8.

One function opens an engine for a (runtime, precision) variant of a model artifact folder; the evaluate step
scores every variant on the test split with it and the server serves with it, so the variant that was measured is
the variant that is served. Files: ``model.onnx`` (fp32 export, dynamic batch) and ``model.int8.onnx`` (the same
graph statically quantized to int8, QDQ format, calibrated on training images).

- bf16 exists on OpenVINO only (it computes in bf16 where the CPU has it, and falls back to fp32 elsewhere).
- int8 runs ``model.int8.onnx`` on OpenVINO or ONNX Runtime.
- torch runs ``model.pt`` at fp32 (and is what Grad-CAM explanations use).

An ``Engine`` runs a batch of crops once through the network. Called, it gives the binary logits (one per crop),
what most callers need; ``Engine.outputs`` gives both heads of the same run: binary logits (N,) and generator
logits (N, G), G = 0 for a model without an attribution head (and for ONNX files exported before it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from components.common.transforms import aggregate, generator_probabilities

RuntimeName = Literal["openvino", "onnxruntime", "torch"]
Precision = Literal["fp32", "bf16", "int8"]
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
# Every variant that can exist; fp32 variants compute what torch computes, the others must earn their place.
VARIANTS: tuple[str, ...] = (
    "torch/fp32",
    "onnxruntime/fp32",
    "openvino/fp32",
    "openvino/bf16",
    "openvino/int8",
    "onnxruntime/int8",
)
EXACT_VARIANTS: tuple[str, ...] = ("torch/fp32", "onnxruntime/fp32", "openvino/fp32")

ONNX_LOGITS = "logits"  # ONNX output: binary logits (N,)
ONNX_GENERATOR_LOGITS = "generator_logits"  # ONNX output of a model with an attribution head: (N, G)
Outputs = tuple[np.ndarray, np.ndarray]  # per crop: binary logits (N,), generator logits (N, G), float32


@dataclass(frozen=True)
class Engine:
    """An NCHW float32 batch of crops -> the network's outputs, in one runtime."""

    run: Callable[[np.ndarray], Outputs]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Binary logits, one per crop."""
        return self.run(batch)[0]

    def outputs(self, batch: np.ndarray) -> Outputs:
        """Binary logits (N,) and generator logits (N, G) of one run."""
        return self.run(batch)


MAX_CROPS_PER_CALL = 64  # crops per engine call when scoring many images (bounds memory, keeps batches efficient)


def variant_name(runtime: str, precision: str) -> str:
    return f"{runtime}/{precision}"


def _flat(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits, dtype=np.float32).reshape(-1)


def image_outputs(engine: Engine, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per image, from each image's crops (``crops[i]`` is image i's (n_i, C, H, W) array): the logit (``aggregate``)
    and the generator probabilities (n_images, G) (``generator_probabilities``). The crops of all images run
    through ``engine`` in batches of at most ``MAX_CROPS_PER_CALL``."""
    stacked = np.concatenate([np.asarray(c, dtype=np.float32) for c in crops])
    runs = [engine.outputs(stacked[i : i + MAX_CROPS_PER_CALL]) for i in range(0, len(stacked), MAX_CROPS_PER_CALL)]
    counts = [len(c) for c in crops]
    logits, generator_logits = np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])
    return aggregate(logits, counts), generator_probabilities(generator_logits, counts)


def image_logits(engine: Engine, crops: Sequence[np.ndarray]) -> np.ndarray:
    """One logit per image from each image's crops (see ``image_outputs``)."""
    return image_outputs(engine, crops)[0]


def image_generators(engine: Engine, crops: Sequence[np.ndarray]) -> np.ndarray:
    """Per image, the probability of each generator recipe (n_images, G): the mean of its crops' softmax."""
    return image_outputs(engine, crops)[1]


def open_engine(folder: Path, runtime: str, precision: str, threads: int, net: Any = None) -> Engine:
    """An engine for variant ``runtime/precision`` of the artifact in ``folder``.

    ``net`` is the loaded torch Detector (needed for torch only). Raises ValueError for a variant that does not
    exist and FileNotFoundError when its model file is missing.
    """
    name = variant_name(runtime, precision)
    if name not in VARIANTS:
        raise ValueError(f"no inference variant {name}; the variants are {', '.join(VARIANTS)}")
    if runtime == "torch":
        return _torch_engine(net)
    path = folder / (INT8_FILE if precision == "int8" else ONNX_FILE)
    if not path.exists():
        raise FileNotFoundError(f"{name} needs {path.name}, which the model artifact in {folder} does not have")
    if runtime == "onnxruntime":
        return _onnxruntime_engine(path, threads)
    return _openvino_engine(path, "bf16" if precision == "bf16" else "f32", threads)


def _torch_engine(net: Any) -> Engine:
    import torch

    if net is None:
        raise ValueError("the torch runtime needs the loaded model")
    net.eval()

    def run(batch: np.ndarray) -> Outputs:
        with torch.inference_mode():
            logits, generator_logits = net.forward_all(torch.from_numpy(batch))
        return _flat(logits.numpy()), generator_logits.numpy().astype(np.float32)

    return Engine(run)


def _onnxruntime_engine(path: Path, threads: int) -> Engine:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # ORT's threads busy-wait after each run by default, stealing the cores from the next image's decode and
    # preprocessing: 0.3 MP decode + preprocess took 20 ms instead of 5 ms here until this was off.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    binary = ONNX_LOGITS if ONNX_LOGITS in names else names[0]
    attribution = ONNX_GENERATOR_LOGITS in names

    def run(batch: np.ndarray) -> Outputs:
        if not attribution:
            return _flat(session.run([binary], {"images": batch})[0]), _no_generators(batch)
        logits, generator_logits = session.run([binary, ONNX_GENERATOR_LOGITS], {"images": batch})
        return _flat(logits), np.asarray(generator_logits, dtype=np.float32)

    return Engine(run)


def _openvino_engine(path: Path, precision_hint: str, threads: int) -> Engine:
    import openvino

    config = {
        # Explicit: OpenVINO's default on a CPU with bf16 support is bf16, not fp32.
        "INFERENCE_PRECISION_HINT": precision_hint,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        # Pinned threads of two worker processes land on the same core (2 workers x 1 thread ran at the speed of
        # one here), and a pod's CPU quota is no set of cores to pin to.
        "ENABLE_CPU_PINNING": False,
    }
    compiled = openvino.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    names = {name for port in compiled.outputs for name in port.get_names()}
    binary = compiled.output(ONNX_LOGITS) if ONNX_LOGITS in names else compiled.output(0)
    attribution = compiled.output(ONNX_GENERATOR_LOGITS) if ONNX_GENERATOR_LOGITS in names else None

    def run(batch: np.ndarray) -> Outputs:
        request.infer({0: batch})
        logits = _flat(request.get_tensor(binary).data).copy()
        if attribution is None:
            return logits, _no_generators(batch)
        return logits, np.array(request.get_tensor(attribution).data, dtype=np.float32)

    return Engine(run)


def _no_generators(batch: np.ndarray) -> np.ndarray:
    """The generator logits of a model without an attribution head: (N, 0)."""
    return np.zeros((len(batch), 0), dtype=np.float32)


def quantize_int8(onnx_path: Path, out_path: Path, calibration: Iterable[np.ndarray]) -> None:
    """Static int8 quantization of ``onnx_path`` (QDQ: uint8 activations, per-channel int8 weights, MinMax)."""
    import logging
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    root = logging.getLogger()  # the quantizer logs one INFO line per rescaled bias through the root logger
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(out_path),
                Batches(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
    finally:
        root.setLevel(level)
