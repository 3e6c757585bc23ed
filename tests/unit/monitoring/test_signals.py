"""The drift job's signals and verdict on synthetic frames (no S3, no MLflow): Evidently runs for real."""

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest

from components.common.features import FEATURE_NAMES
from components.common.settings import DriftSettings
from components.monitoring.publish import DriftGauge, drift_gauges, scalar_metrics
from components.monitoring.signals import assess
from tests.unit.monitoring.synthetic import CONFIG, NEW_UPLOAD_TOOL, REFERENCE, drift_result, records


def test_same_distribution_gives_no_alert() -> None:
    assessment = assess(REFERENCE, records(5000, seed=2), CONFIG, DriftSettings())
    s = assessment.signals
    assert s is not None
    assert assessment.verdict == "ok", assessment.message
    assert assessment.alerts == []
    assert s.drift_share < 0.5
    assert not s.dataset_drift
    assert set(s.features) == {*FEATURE_NAMES, "format"}
    assert abs(s.mean_probability_shift) < 0.05
    assert abs(s.confidence_drop) < 0.1
    assert not s.probability_drift.detected
    assert s.records == 5000
    assert s.reference_records == 600


def test_brighter_blurrier_photos_drift_the_features() -> None:
    current = records(3000, seed=3, **NEW_UPLOAD_TOOL)
    assessment = assess(REFERENCE, current, CONFIG, DriftSettings())
    s = assessment.signals
    assert s is not None
    assert assessment.verdict == "alert"
    assert s.dataset_drift
    assert s.drift_share >= 0.5
    for feature in ("brightness", "contrast", "saturation", "sharpness", "colourfulness", "exif"):
        assert s.features[feature].detected, feature
    assert not s.features["width"].detected  # the sizes did not change
    assert assessment.alerts[0].startswith("drift share")
    assert "brightness" in assessment.alerts[0]
    assert not s.probability_drift.detected  # the images changed, the model's answers did not (here)


def test_more_ai_generated_images_shift_the_probabilities() -> None:
    assessment = assess(REFERENCE, records(3000, seed=4, ai_share=0.7), CONFIG, DriftSettings())
    s = assessment.signals
    assert s is not None
    assert assessment.verdict == "alert"
    assert s.mean_probability_shift > 0.2
    assert s.ai_generated_ratio > s.ai_generated_ratio_reference + 0.3
    assert s.probability_drift.detected
    assert not s.dataset_drift
    assert any(reason.startswith("mean probability shift +") for reason in assessment.alerts)
    assert any(reason.startswith("probability distribution drifted") for reason in assessment.alerts)


def test_a_model_that_no_longer_knows_loses_confidence() -> None:
    """Probabilities bunched at the threshold: the original design's alert, confidence_drop > 15%."""
    current = records(3000, seed=5, unsure=True)
    settings = DriftSettings(probability_shift_threshold=0.5, alert_on_probability_drift=False)
    assessment = assess(REFERENCE, current, CONFIG, settings)
    s = assessment.signals
    assert s is not None
    assert s.confidence_drop > 0.5
    assert s.mean_margin < s.mean_margin_reference
    assert s.low_confidence_ratio > 0.8 > s.low_confidence_ratio_reference
    assert assessment.verdict == "alert"
    assert [reason.split(" ")[:2] for reason in assessment.alerts] == [["confidence", "drop"]]


@pytest.mark.parametrize(
    ("settings", "verdict"),
    [
        (DriftSettings(), "alert"),  # brighter photos: most columns drift
        (DriftSettings(drift_share_threshold=0.9), "ok"),  # ... but not 90% of them
    ],
)
def test_the_drift_share_threshold_is_configurable(settings: DriftSettings, verdict: str) -> None:
    assessment = assess(REFERENCE, records(2000, seed=6, **NEW_UPLOAD_TOOL), CONFIG, settings)
    assert assessment.verdict == verdict


def test_too_few_records_give_no_verdict() -> None:
    current = records(199, seed=7, **NEW_UPLOAD_TOOL)
    assessment = assess(REFERENCE, current, CONFIG, DriftSettings(min_records=200))
    assert assessment.verdict == "no_verdict"
    assert assessment.signals is None
    assert assessment.snapshot is None
    assert "199 usable records" in assessment.message
    assert "min_records=200" in assessment.message
    assert assess(REFERENCE, current, CONFIG, DriftSettings(min_records=199)).verdict == "alert"


def test_empty_columns_are_skipped_not_compared() -> None:
    """A window of PNGs only has no JPEG quality: nothing to compare, and no Evidently error."""
    current = records(1000, seed=8)
    current["jpeg_quality"] = np.nan
    s = assess(REFERENCE, current, CONFIG, DriftSettings()).signals
    assert s is not None
    assert s.skipped_features == ["jpeg_quality"]
    assert "jpeg_quality" not in s.features


def test_references_without_stored_predictions_still_work() -> None:
    reference = REFERENCE.drop(columns=["predicted_label", "confidence"])
    reference["predicted_label"] = reference["probability"].map(CONFIG.label)
    reference["confidence"] = reference["probability"].map(CONFIG.confidence)
    s = assess(reference, records(1000, seed=9), CONFIG, DriftSettings()).signals
    assert s is not None
    assert s.low_confidence_ratio_reference == (REFERENCE["confidence"] == "low").mean()


def test_the_ai_declared_ratio_is_reported_not_alerted_on() -> None:
    """The share of records whose file declares AI origin; a missing flag (an older server) counts as not declared."""
    current = records(1000, seed=12)
    current["ai_declared"] = pd.Series([True] * 150 + [False] * 350 + [None] * 500, dtype=object)
    assessment = assess(REFERENCE, current, CONFIG, DriftSettings())
    s = assessment.signals
    assert s is not None
    assert s.ai_declared_ratio == pytest.approx(0.15)
    assert assessment.verdict == "ok", assessment.message  # no threshold: never an alert reason
    result = drift_result(s, assessment.verdict)
    assert scalar_metrics(result)["ai_declared_ratio"] == pytest.approx(0.15)
    assert f"{DriftGauge.AI_DECLARED_RATIO.metric} 0.15" in generate_latest(drift_gauges(result)).decode()
    row = next(line for line in result.to_text(DriftSettings()).splitlines() if line.startswith("ai_declared ratio"))
    assert row.split() == ["ai_declared", "ratio", "0.1500"]  # no reference, no threshold, no state
    without = assess(REFERENCE, records(1000, seed=12), CONFIG, DriftSettings()).signals  # no column at all
    assert without is not None
    assert without.ai_declared_ratio == 0.0
