"""Synthetic inputs of the drift job's tests: records with realistic ranges of product photos and the model's
answers for them, the reference they are compared with, and a finished run's result."""

import numpy as np
import pandas as pd

from components.common.artifact import ArtifactConfig
from components.common.model_config import ModelConfig
from components.monitoring.result import DriftResult

CONFIG = ArtifactConfig(ModelConfig(), threshold=0.45, dataset_version="test")


def records(
    n: int,
    seed: int,
    *,
    brightness: float = 0.0,
    blur: float = 1.0,
    exif: float = 0.4,
    ai_share: float = 0.3,
    unsure: bool = False,
    config: ArtifactConfig = CONFIG,
) -> pd.DataFrame:
    """``n`` synthetic records with realistic ranges of product photos and the model's answers for them.

    brightness: added to the mean luminance (the colour statistics follow a little); blur: factor on sharpness;
    exif: share of files with EXIF metadata; ai_share: share of AI-generated images; unsure: probabilities bunched
    around the threshold (a model that no longer knows) instead of near 0 and 1.
    """
    rng = np.random.default_rng(seed)
    fmt = rng.choice(["JPEG", "PNG", "WEBP"], n, p=[0.7, 0.2, 0.1])
    width = rng.choice([800, 1000, 1200, 1600, 2000, 3000], n).astype(float)
    height = np.round(width * rng.choice([0.75, 1.0, 1.333], n))
    frame = pd.DataFrame(
        {
            "width": width,
            "height": height,
            "bytes": np.round(width * height * rng.uniform(0.08, 0.35, n)),
            "brightness": np.clip(rng.normal(0.55 + brightness, 0.1, n), 0, 1),
            "contrast": np.clip(rng.normal(0.22 + brightness / 4, 0.05, n), 0, 1),
            "saturation": np.clip(rng.beta(2, 4, n) + brightness / 3, 0, 1),
            "sharpness": np.clip(rng.gamma(4, 0.015, n) * blur, 0, 1),
            "colourfulness": np.clip(rng.gamma(5, 0.05, n) + brightness / 2, 0, None),
            "jpeg_quality": np.where(fmt == "JPEG", np.round(rng.uniform(70, 96, n)), np.nan),
            "exif": (rng.random(n) < exif).astype(float),
            "format": fmt,
        }
    )
    is_ai = rng.random(n) < ai_share
    if unsure:
        probability = np.clip(rng.normal(config.threshold, 0.08, n), 0, 1)
    else:
        probability = np.where(is_ai, rng.beta(8, 1.5, n), rng.beta(1.5, 8, n))
    frame["probability"] = probability
    frame["predicted_label"] = [config.label(p) for p in probability]
    frame["confidence"] = [config.confidence(p) for p in probability]
    frame["label"] = np.where(is_ai, "ai_generated", "real")
    return frame


REFERENCE = records(600, seed=1)
NEW_UPLOAD_TOOL = {"brightness": 0.2, "blur": 0.5, "exif": 0.0}  # brighter, softer photos without EXIF: 6 of 11 drift


def drift_result(signals: object, verdict: str) -> DriftResult:
    return DriftResult(
        model_name="apd-detector",
        model_version="3",
        endpoint="canary",
        window_start="2026-11-01T00:00:00+00:00",
        window_end="2026-11-02T00:00:00+00:00",
        run_at="2026-11-02T00:05:00+00:00",
        verdict=verdict,  # type: ignore[arg-type]
        message="m",
        records=250,
        excluded={"decode_error": 2, "unpaired": 1},
        signals=signals,  # type: ignore[arg-type]
        alerts=[],
        report_uri=None,
        summary_uri="s3://b/drift/summary.json",
        mlflow_run_uri="runs:/abc",
    )
