"""The drift job's signals and verdict on synthetic frames (no S3, no MLflow): Evidently runs for real."""

import io
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import generate_latest

from components.common.artifact import ArtifactConfig
from components.common.features import FEATURE_NAMES
from components.common.model import ModelConfig
from components.common.records import RECORD_SCHEMA
from components.common.settings import DriftSettings, S3Settings
from components.drift import (
    DriftResult,
    _is_set,
    assess,
    drift_gauges,
    read_records,
    scalar_metrics,
    window,
)

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


def _result(signals: object, verdict: str) -> DriftResult:
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


def test_gauges_have_the_agreed_names() -> None:
    assessment = assess(REFERENCE, records(2000, seed=10, **NEW_UPLOAD_TOOL), CONFIG, DriftSettings())
    text = generate_latest(drift_gauges(_result(assessment.signals, assessment.verdict))).decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    assert names == {
        "apd_drift_share",
        "apd_drift_detected",
        "apd_drift_feature_score",
        "apd_drift_feature_detected",
        "apd_drift_mean_probability_shift",
        "apd_drift_low_confidence_ratio",
        "apd_drift_low_confidence_ratio_reference",
        "apd_drift_ai_generated_ratio",
        "apd_drift_ai_generated_ratio_reference",
        "apd_drift_ai_declared_ratio",
        "apd_drift_probability_drift_score",
        "apd_drift_confidence_drop",
        "apd_drift_alert",
        "apd_drift_records",
        "apd_drift_last_run_timestamp_seconds",
    }
    assert 'apd_drift_feature_detected{feature="brightness"} 1.0' in text
    assert "apd_drift_alert 1.0" in text


def test_without_a_verdict_only_the_record_count_and_time_are_gauged() -> None:
    text = generate_latest(drift_gauges(_result(None, "no_verdict"))).decode()
    values = [line for line in text.splitlines() if not line.startswith("#")]
    run_at = datetime(2026, 11, 2, 0, 5, tzinfo=UTC).timestamp()
    assert values == ["apd_drift_records 250.0", f"apd_drift_last_run_timestamp_seconds {run_at:.8g}"]


def test_the_table_shows_every_signal_and_the_verdict() -> None:
    assessment = assess(REFERENCE, records(2000, seed=11, ai_share=0.7), CONFIG, DriftSettings())
    text = _result(assessment.signals, assessment.verdict).to_text(DriftSettings())
    for expected in ("drift share", "mean probability", "confidence drop", "low-confidence ratio", "brightness"):
        assert expected in text
    assert "verdict: ALERT" in text
    assert "left out: 2 decode error, 1 unpaired" in text
    assert "verdict: NO VERDICT: m" in _result(None, "no_verdict").to_text(DriftSettings())


def test_the_ai_declared_ratio_is_reported_not_alerted_on() -> None:
    """The share of records whose file declares AI origin; a missing flag (an older server) counts as not declared."""
    current = records(1000, seed=12)
    current["ai_declared"] = pd.Series([True] * 150 + [False] * 350 + [None] * 500, dtype=object)
    assessment = assess(REFERENCE, current, CONFIG, DriftSettings())
    s = assessment.signals
    assert s is not None
    assert s.ai_declared_ratio == pytest.approx(0.15)
    assert assessment.verdict == "ok", assessment.message  # no threshold: never an alert reason
    result = _result(s, assessment.verdict)
    assert scalar_metrics(result)["ai_declared_ratio"] == pytest.approx(0.15)
    assert "apd_drift_ai_declared_ratio 0.15" in generate_latest(drift_gauges(result)).decode()
    row = next(line for line in result.to_text(DriftSettings()).splitlines() if line.startswith("ai_declared ratio"))
    assert row.split() == ["ai_declared", "ratio", "0.1500"]  # no reference, no threshold, no state
    without = assess(REFERENCE, records(1000, seed=12), CONFIG, DriftSettings()).signals  # no column at all
    assert without is not None
    assert without.ai_declared_ratio == 0.0


class _Object:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class _Listed:
    def __init__(self, name: str) -> None:
        self.object_name = name


class _Bucket:
    """The two calls of the minio client that read_records makes, over Parquet files in memory."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def list_objects(self, bucket: str, prefix: str, recursive: bool) -> list[_Listed]:
        return [_Listed(key) for key in self.files if key.startswith(prefix)]

    def get_object(self, bucket: str, key: str) -> _Object:
        return _Object(self.files[key])


def _parquet(frame: pd.DataFrame, schema: pa.Schema) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), buffer)
    return buffer.getvalue()


def test_sink_files_without_the_provenance_columns_are_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files the sink wrote before it recorded the provenance evidence lack ai_declared: read as not declared."""
    frame = records(6, seed=13).drop(columns=["label"])
    frame["time"] = pd.Timestamp("2026-11-01T12:00:00Z")
    frame["endpoint"], frame["decode_error"], frame["paired"] = "default", None, True
    for name in RECORD_SCHEMA.names:
        if name not in frame:
            frame[name] = None
    new = frame.copy()
    new["ai_declared"] = [True, True, False, None, False, False]
    legacy = pa.schema(
        [f for f in RECORD_SCHEMA if f.name not in {"ai_declared", "c2pa", "provenance_generator", "verdict_source"}]
    )
    folder = "records/date=2026-11-01/model=m/version=1/"
    files = {
        f"{folder}part-old.parquet": _parquet(frame, legacy),
        f"{folder}part-new.parquet": _parquet(new, RECORD_SCHEMA),
    }
    bucket = _Bucket(files)

    def client(self: Any, http_client: Any = None) -> _Bucket:
        return bucket

    monkeypatch.setattr(S3Settings, "client", client)
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    usable, excluded = read_records(S3Settings(), "b", "records", "m", "1", "default", start, end)
    assert len(usable) == 12
    assert excluded == {"decode_error": 0, "unpaired": 0}
    assert usable["ai_declared"].eq(True).sum() == 2
    only_old = {k: v for k, v in files.items() if "old" in k}
    monkeypatch.setattr(bucket, "files", only_old)
    usable, _ = read_records(S3Settings(), "b", "records", "m", "1", "default", start, end)
    assert len(usable) == 6
    assert usable["ai_declared"].isna().all()


def test_the_window() -> None:
    end = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
    start, stop = window(24, end=end)
    assert (start, stop) == (datetime(2026, 11, 1, 6, 0, tzinfo=UTC), end)
    assert window(1, datetime(2026, 1, 1), datetime(2026, 1, 1, 2))[0].tzinfo == UTC  # naive = UTC
    with pytest.raises(ValueError, match="not before its end"):
        window(1, end, end)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pd.Series([True, False]), [True, False]),  # a boolean flag
        (pd.Series(["too_large", None, ""]), [True, False, False]),  # a reason string, or nothing
        (pd.Series([None, None], dtype=object), [False, False]),  # a column with no errors at all
    ],
)
def test_decode_error_flags(values: pd.Series, expected: list[bool]) -> None:
    assert _is_set(values).tolist() == expected
