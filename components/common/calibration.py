"""Probability calibration and the statistics evaluation reports about it.

- ``fit_temperature``: temperature scaling (one parameter, monotone, so ranking and ROC AUC never change) fitted
  on validation logits by minimising the negative log-likelihood.
- ``expected_calibration_error``: the gap between confidence and frequency, averaged over equal-width bins.
- ``rate_upper_bound``: a one-sided Clopper-Pearson upper confidence bound of a rate (the reduced-precision gate
  bounds the rate of changed decisions with it).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import beta

from components.common.transforms import probabilities

TEMPERATURE_RANGE = (0.05, 20.0)  # searched on a log scale; the bounds keep a degenerate split from running off


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    scaled = logits / temperature
    # log(1 + exp(-|z|)) + max(z, 0) - y z: the binary cross-entropy of sigmoid(z), stable for large |z|
    return float(np.mean(np.logaddexp(0, scaled) - labels * scaled))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the NLL of sigmoid(logit / T) on (validation) data."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    low, high = np.log(TEMPERATURE_RANGE)
    found = minimize_scalar(
        lambda log_t: _nll(logits, labels, float(np.exp(log_t))), bounds=(low, high), method="bounded"
    )
    return float(np.exp(found.x))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE of the probability of the positive class: sum over bins of (share of images) x |mean p - frequency|."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    index = np.minimum((probs * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.mean() * abs(probs[members].mean() - labels[members].mean())
    return float(total)


def calibrated(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at ``temperature`` (``transforms.probabilities``, float64 for the statistics)."""
    return probabilities(logits, temperature).astype(np.float64)


def rate_upper_bound(events: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate after ``events`` in ``trials``: the true rate exceeds it
    with probability at most 1 - ``confidence``."""
    if trials <= 0:
        return 1.0
    if events >= trials:
        return 1.0
    return float(beta.ppf(confidence, events + 1, trials - events))
