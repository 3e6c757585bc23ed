"""Classification metrics at a threshold, and the choice of that threshold (the operating point)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score


def choose_threshold(labels: np.ndarray, probs: np.ndarray, max_fpr: float = 1.0) -> float:
    """The probability cut that maximises F1 on (validation) data among the cuts that call at most ``max_fpr`` of
    its real images generated (the operating point: how many genuine sellers may be flagged); ties go to the cut
    nearest 0.5."""
    candidates = np.unique(np.concatenate([probs, [0.5, np.nextafter(probs.max(), 2)]]))
    real = labels == 0
    allowed = [t for t in candidates if not real.any() or (probs[real] >= t).mean() <= max_fpr]
    scores = [(f1_score(labels, probs >= t, zero_division=0), -abs(t - 0.5), float(t)) for t in allowed]
    return max(scores)[2]


def classification_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (ai_generated positive), ROC AUC and the false-positive rate on real images."""
    predicted = probs >= threshold
    both = len(np.unique(labels)) == 2
    real = labels == 0
    return {
        "accuracy": float((predicted == labels).mean()),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, probs)) if both else float("nan"),
        "fpr_real": float(predicted[real].mean()) if real.any() else float("nan"),
    }


def overall_attribution_accuracy(attribution: dict[str, dict[str, float]]) -> float:
    """The accuracy over all images of ``attribution_accuracy``'s recipes."""
    images = sum(a["images"] for a in attribution.values())
    return sum(a["accuracy"] * a["images"] for a in attribution.values()) / images if images else float("nan")


def _key(name: str) -> str:
    """An MLflow metric name from a condition, generator or variant name."""
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)


def flat_metrics(evaluation: Any) -> dict[str, float]:
    """Every scalar of an evaluation (``evaluate.Evaluation`` or its dict) as one flat dict of MLflow metrics (the
    run's and the registered version's ``metrics.json``)."""
    e = evaluation if isinstance(evaluation, dict) else evaluation.__dict__
    out = {f"test_{k}": float(v) for k, v in e["metrics"].items()}
    out |= {"threshold": float(e["threshold"]), "temperature": float(e["temperature"])}
    out["onnx_max_abs_diff"] = float(e["onnx_max_abs_diff"])
    for name, r in e["robustness"].items():
        out |= {f"test_{_key(name)}_{k}": float(v) for k, v in r.items()}
    for name, g in e["generators"].items():
        out[f"test_recall_{_key(name)}"] = float(g["recall"])
    attribution = e.get("attribution") or {}  # evaluations from before the attribution head have none
    if attribution:
        out["test_attribution_accuracy"] = overall_attribution_accuracy(attribution)
    for name, a in attribution.items():
        out[f"test_attribution_accuracy_{_key(name)}"] = float(a["accuracy"])
    for name, v in e["variants"].items():
        if "error" not in v:
            prefix = _key(name)
            out |= {f"{prefix}_test_roc_auc": v["roc_auc"], f"{prefix}_test_accuracy": v["accuracy"]}
            out[f"{prefix}_flip_rate_upper"] = v["flip_rate_upper"]
    if e["champion"]:
        out |= {f"champion_test_{k}": float(v) for k, v in e["champion"]["metrics"].items()}
    return out
