"""Classification metrics at a threshold, and the choice of that threshold (the operating point)."""

from __future__ import annotations

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
