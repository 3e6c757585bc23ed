"""Inference runtimes: the same network run by torch, ONNX Runtime or OpenVINO, at fp32, bf16 or int8.

One function opens an engine for a (runtime, precision) variant of a model artifact folder; the evaluate step
scores every variant on the test split with it and the server serves with it, so the variant that was measured is
the variant that is served. Files: ``model.onnx`` (fp32 export, dynamic batch) and ``model.int8.onnx`` (the same
graph statically quantized to int8, QDQ format, calibrated on training images).

- bf16 exists on OpenVINO only (it computes in bf16 where the CPU has it, and falls back to fp32 elsewhere).
- int8 runs ``model.int8.onnx`` on OpenVINO or ONNX Runtime.
- torch runs ``model.pt`` at fp32 (and is what Grad-CAM explanations use).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from components.common.transforms import aggregate

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

Engine = Callable[[np.ndarray], np.ndarray]  # NCHW float32 batch of crops -> logits (float32, one per crop)
MAX_CROPS_PER_CALL = 64  # crops per engine call when scoring many images (bounds memory, keeps batches efficient)


def variant_name(runtime: str, precision: str) -> str:
    return f"{runtime}/{precision}"


def _flat(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits, dtype=np.float32).reshape(-1)


def image_logits(engine: Engine, crops: Sequence[np.ndarray]) -> np.ndarray:
    """One logit per image from each image's crops (``crops[i]`` is image i's (n_i, C, H, W) array): the crops of
    all images run through ``engine`` in batches of at most ``MAX_CROPS_PER_CALL``, then ``aggregate``."""
    stacked = np.concatenate([np.asarray(c, dtype=np.float32) for c in crops])
    logits = np.concatenate(
        [engine(stacked[i : i + MAX_CROPS_PER_CALL]) for i in range(0, len(stacked), MAX_CROPS_PER_CALL)]
    )
    return aggregate(logits, [len(c) for c in crops])


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

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return _flat(net(torch.from_numpy(batch)).numpy())

    return run


def _onnxruntime_engine(path: Path, threads: int) -> Engine:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    # ORT's threads busy-wait after each run by default, stealing the cores from the next image's decode and
    # preprocessing: 0.3 MP decode + preprocess took 20 ms instead of 5 ms here until this was off.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda batch: _flat(session.run(None, {"images": batch})[0])


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

    def run(batch: np.ndarray) -> np.ndarray:
        request.infer({0: batch})
        return _flat(request.get_output_tensor(0).data).copy()

    return run


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
