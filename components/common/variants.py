"""The serving variants of a trained detector: export (ONNX fp32 checked against torch, int8), and the rule that
enables a reduced-precision variant only when it is faithful to fp32.

bf16 and int8 are judged on validation + test together: enabled only when the ROC AUC stays within
``MAX_AUC_DELTA`` of torch fp32's and the one-sided 95 % Clopper-Pearson upper bound of the rate of changed
decisions (label flips against torch fp32 at the model's threshold) is at most ``MAX_FLIP_RATE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from sklearn.metrics import roc_auc_score

from components.common.artifact import export_onnx
from components.common.calibration import calibrated, rate_upper_bound
from components.common.loaders import CropBatch
from components.common.metrics import classification_metrics
from components.common.model import Detector
from components.common.runtimes import (
    EXACT_VARIANTS,
    INT8_FILE,
    ONNX_FILE,
    VARIANTS,
    Engine,
    open_engine,
    quantize_int8,
)
from components.common.transforms import aggregate, generator_probabilities

log = structlog.get_logger(__name__)

ONNX_TOLERANCE = 1e-4  # largest accepted probability difference between an fp32 runtime and torch
MAX_AUC_DELTA = 0.005  # a bf16/int8 variant's ROC AUC (validation + test) must stay this close to fp32's ...
MAX_FLIP_RATE = 0.02  # ... and the 95 % upper bound of its rate of changed decisions at or below this


def engine_logits(engine: Engine, batches: list[CropBatch]) -> np.ndarray:
    """One logit per image of ``batches``, run by ``engine``."""
    return np.concatenate([aggregate(engine(crops.numpy()), counts) for crops, counts, _ in batches])


def engine_scores(engine: Engine, batches: list[CropBatch]) -> tuple[np.ndarray, np.ndarray]:
    """Per image: the logit and the generator probabilities (n_images, G), from one run of each batch."""
    logits, generators = [], []
    for crops, counts, _ in batches:
        crop_logits, crop_generator_logits = engine.outputs(crops.numpy())
        logits.append(aggregate(crop_logits, counts))
        generators.append(generator_probabilities(crop_generator_logits, counts))
    return np.concatenate(logits), np.concatenate(generators)


def export_variants(
    model: Detector, out_dir: Path, calibration: list[CropBatch], val: list[CropBatch], temperature: float
) -> float:
    """Write model.onnx and model.int8.onnx to ``out_dir``; returns the fp32 runtimes' largest deviation from torch
    in calibrated probability or generator probability on ``val`` (raises ValueError above ONNX_TOLERANCE: a broken
    export must never be served)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(model, out_dir / ONNX_FILE)
    quantize_int8(out_dir / ONNX_FILE, out_dir / INT8_FILE, (crops.numpy() for crops, _, _ in calibration))
    threads = torch.get_num_threads()
    logits, generators = engine_scores(open_engine(out_dir, "torch", "fp32", threads, model), val)
    reference = calibrated(logits, temperature)
    worst = 0.0
    for runtime in ("onnxruntime", "openvino"):
        logits, runtime_generators = engine_scores(open_engine(out_dir, runtime, "fp32", threads), val)
        worst = max(worst, float(np.abs(calibrated(logits, temperature) - reference).max()))
        if generators.size:
            worst = max(worst, float(np.abs(runtime_generators - generators).max()))
    if worst > ONNX_TOLERANCE:
        raise ValueError(
            f"the ONNX export differs from torch by {worst:.2e} in probability (tolerance {ONNX_TOLERANCE:.0e})"
        )
    return worst


def score_variants(  # noqa: PLR0913, PLR0917 - the model, its export, both splits and their calibration
    model: Detector, folder: Path, val: list[CropBatch], test: list[CropBatch], temperature: float, threshold: float
) -> dict[str, dict[str, Any]]:
    """Every runtime/precision variant on validation + test; the non-fp32 ones enabled only when faithful."""
    val_labels = np.concatenate([targets.numpy() for _, _, targets in val])
    test_labels = np.concatenate([targets.numpy() for _, _, targets in test])
    both_labels = np.concatenate([val_labels, test_labels])
    results: dict[str, dict[str, Any]] = {}
    reference: np.ndarray | None = None
    for name in VARIANTS:  # torch/fp32 first: the reference
        runtime, precision = name.split("/")
        try:
            engine = open_engine(folder, runtime, precision, torch.get_num_threads(), model)
            probs = calibrated(np.concatenate([engine_logits(engine, val), engine_logits(engine, test)]), temperature)
        except Exception as exc:  # the runtimes raise their own error types; recorded, logged, variant disabled
            if name in EXACT_VARIANTS:
                raise
            log.warning("variant_failed", variant=name, error=str(exc), error_type=type(exc).__name__)
            results[name] = {"enabled": False, "error": f"{type(exc).__name__}: {exc}"}
            continue
        reference = probs if reference is None else reference
        test_scores = classification_metrics(test_labels, probs[len(val_labels) :], threshold)
        flips = int(((probs >= threshold) != (reference >= threshold)).sum())
        result = {
            "roc_auc": test_scores["roc_auc"],
            "accuracy": test_scores["accuracy"],
            "roc_auc_all": float(roc_auc_score(both_labels, probs)),
            "flips": flips,
            "images": len(probs),
            "flip_rate_upper": rate_upper_bound(flips, len(probs)),
            "max_abs_diff": float(np.abs(probs - reference).max()),
        }
        result["enabled"] = name in EXACT_VARIANTS or is_faithful(result, results["torch/fp32"])
        results[name] = result
    return results


def is_faithful(variant: dict[str, Any], fp32: dict[str, Any]) -> bool:
    """Whether a variant's ROC AUC (validation + test) stays within ``MAX_AUC_DELTA`` of fp32's and the 95 % upper
    bound of its rate of changed decisions is at most ``MAX_FLIP_RATE``."""
    return bool(
        abs(variant["roc_auc_all"] - fp32["roc_auc_all"]) <= MAX_AUC_DELTA
        and variant["flip_rate_upper"] <= MAX_FLIP_RATE
    )
