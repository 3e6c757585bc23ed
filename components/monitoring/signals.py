"""The verdict on one window: Evidently's drift report of the features and the probability, the prediction
signals, and the alert rules (any one threshold of ``DriftSettings`` passed; too few records: no verdict)."""

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from components.common.artifact import ArtifactConfig
from components.common.features import CATEGORICAL_FEATURES, FEATURE_NAMES
from components.common.records import FEATURE_COLUMNS
from components.common.settings import DriftSettings

Verdict = Literal["alert", "ok", "no_verdict"]


@dataclass(frozen=True)
class ColumnDrift:
    """One Evidently stat test: a p-value (K-S, chi-square: lower = more drift) or a distance (Wasserstein,
    Jensen-Shannon, PSI: higher = more drift), depending on ``method``; ``detected`` is comparable across methods."""

    score: float
    detected: bool
    method: str
    threshold: float


@dataclass(frozen=True)
class DriftSignals:
    """Every number the verdict is made of, for one window against the reference."""

    records: int
    reference_records: int
    drift_share: float  # share of the compared feature columns that drifted
    drifted_features: int
    dataset_drift: bool  # drift_share >= drift_share_threshold
    features: dict[str, ColumnDrift]
    skipped_features: list[str]  # columns empty in the reference or in the window: nothing to compare
    mean_probability: float
    mean_probability_reference: float
    mean_probability_shift: float  # current - reference
    low_confidence_ratio: float  # share of confidence == "low"
    low_confidence_ratio_reference: float
    ai_generated_ratio: float  # share predicted ai_generated
    ai_generated_ratio_reference: float
    probability_drift: ColumnDrift
    mean_margin: float  # mean distance to the threshold, relative to the room on that side (ArtifactConfig.margin)
    mean_margin_reference: float
    confidence_drop: float  # (reference - current mean margin) / reference mean margin; > 0: less confident
    ai_declared_ratio: float  # share whose file declares AI origin (provenance; null = not declared); no alert


def _drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], settings: DriftSettings
) -> tuple[Any, dict[str, ColumnDrift], float, float]:
    """Evidently's DataDriftPreset over ``columns`` and ValueDrift on the probability: the snapshot, each column's
    test, the drifted share and count."""
    with warnings.catch_warnings():
        # importing Evidently deprecates things inside its own dependencies (numpy.core, litestar): not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import ValueDrift
        from evidently.presets import DataDriftPreset

    numeric = [c for c in columns if c not in CATEGORICAL_FEATURES]
    definition = DataDefinition(
        numerical_columns=[*numeric, "probability"],
        categorical_columns=[c for c in columns if c in CATEGORICAL_FEATURES],
    )
    report = Report(
        [
            DataDriftPreset(
                columns=columns,
                drift_share=settings.drift_share_threshold,
                num_method=settings.num_method,
                cat_method=settings.cat_method,
                threshold=settings.stattest_threshold,
            ),
            ValueDrift(
                column="probability", method=settings.probability_method, threshold=settings.probability_threshold
            ),
        ],
        include_tests=True,
    )
    keep = [*columns, "probability"]
    with warnings.catch_warnings():
        # numpy's divide warnings on constant columns (exif all 0) inside Evidently; its results stay defined
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = report.run(
            current_data=Dataset.from_pandas(current[keep], data_definition=definition),
            reference_data=Dataset.from_pandas(reference[keep], data_definition=definition),
        )
    content = snapshot.dict()
    failed = {t["metric_config"]["metric_id"] for t in content["tests"] if str(t["status"]).endswith("FAIL")}
    tests: dict[str, ColumnDrift] = {}
    share = count = 0.0
    for metric in content["metrics"]:
        config = metric["config"]
        if config["type"].endswith("DriftedColumnsCount"):
            share, count = float(metric["value"]["share"]), float(metric["value"]["count"])
        elif config["type"].endswith("ValueDrift"):
            tests[config["column"]] = ColumnDrift(
                score=float(metric["value"]),
                detected=metric["id"] in failed,
                method=str(config["method"]),
                threshold=float(config["threshold"]),
            )
    return snapshot, tests, share, count


def compute_signals(
    reference: pd.DataFrame, current: pd.DataFrame, config: ArtifactConfig, settings: DriftSettings
) -> tuple[DriftSignals, Any]:
    """Feature and prediction drift of ``current`` against ``reference`` (both with the probability, predicted
    label, confidence and feature columns; ``current`` optionally with ``ai_declared``, missing = not declared);
    also returns Evidently's snapshot (for the HTML report)."""
    reference, current = _typed(reference), _typed(current)
    columns = [c for c in FEATURE_COLUMNS if reference[c].notna().any() and current[c].notna().any()]
    skipped = [c for c in FEATURE_COLUMNS if c not in columns]
    snapshot, tests, share, count = _drift_report(reference, current, columns, settings)
    ref_margin = float(reference["probability"].map(config.margin).mean())
    cur_margin = float(current["probability"].map(config.margin).mean())
    ai_label = config.labels[1]
    signals = DriftSignals(
        records=len(current),
        reference_records=len(reference),
        drift_share=share,
        drifted_features=int(count),
        dataset_drift=share >= settings.drift_share_threshold,
        features={c: tests[c] for c in columns},
        skipped_features=skipped,
        mean_probability=float(current["probability"].mean()),
        mean_probability_reference=float(reference["probability"].mean()),
        mean_probability_shift=float(current["probability"].mean() - reference["probability"].mean()),
        low_confidence_ratio=float((current["confidence"] == "low").mean()),
        low_confidence_ratio_reference=float((reference["confidence"] == "low").mean()),
        ai_generated_ratio=float((current["predicted_label"] == ai_label).mean()),
        ai_generated_ratio_reference=float((reference["predicted_label"] == ai_label).mean()),
        probability_drift=tests["probability"],
        mean_margin=cur_margin,
        mean_margin_reference=ref_margin,
        confidence_drop=(ref_margin - cur_margin) / ref_margin if ref_margin > 0 else 0.0,
        ai_declared_ratio=_share_true(current["ai_declared"]) if "ai_declared" in current else 0.0,
    )
    return signals, snapshot


def _share_true(column: pd.Series) -> float:
    """Share of True in a flag column; null (object None or pandas NA) counts as False, in the denominator too."""
    return float(column.eq(True).fillna(False).astype(bool).mean())


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric features and the probability as floats, the format as strings (missing stays missing)."""
    out = frame.copy()
    for column in (*FEATURE_NAMES, "probability"):
        out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
    for column in CATEGORICAL_FEATURES:
        out[column] = out[column].astype(object).where(out[column].notna(), None)
    return out


def alert_reasons(signals: DriftSignals, settings: DriftSettings) -> list[str]:
    """One sentence per threshold the signals pass (empty: no alert)."""
    reasons = []
    if signals.drift_share >= settings.drift_share_threshold:
        drifted = ", ".join(name for name, d in signals.features.items() if d.detected)
        reasons.append(
            f"drift share {signals.drift_share:.2f} >= {settings.drift_share_threshold:.2f} (drifted: {drifted})"
        )
    if signals.confidence_drop > settings.confidence_drop_threshold:
        reasons.append(
            f"confidence drop {signals.confidence_drop:.1%} > {settings.confidence_drop_threshold:.0%} (mean margin "
            f"{signals.mean_margin_reference:.3f} -> {signals.mean_margin:.3f})"
        )
    if abs(signals.mean_probability_shift) >= settings.probability_shift_threshold:
        reasons.append(
            f"mean probability shift {signals.mean_probability_shift:+.3f} (|shift| >= "
            f"{settings.probability_shift_threshold:.2f}; {signals.mean_probability_reference:.3f} -> "
            f"{signals.mean_probability:.3f})"
        )
    if settings.alert_on_probability_drift and signals.probability_drift.detected:
        d = signals.probability_drift
        reasons.append(f"probability distribution drifted ({d.method} {d.score:.4g}, threshold {d.threshold:g})")
    return reasons


@dataclass(frozen=True)
class Assessment:
    """The verdict on one window: without enough records none, else from the signals and the thresholds."""

    verdict: Verdict
    message: str
    signals: DriftSignals | None = None
    alerts: list[str] = field(default_factory=list)
    snapshot: Any = None  # Evidently's snapshot, for the HTML report


def assess(
    reference: pd.DataFrame, current: pd.DataFrame, config: ArtifactConfig, settings: DriftSettings
) -> Assessment:
    """No verdict below ``min_records`` usable records; otherwise the signals and every threshold they pass."""
    if len(current) < settings.min_records:
        return Assessment(
            "no_verdict",
            f"{len(current)} usable records in the window, fewer than min_records={settings.min_records} "
            "(widen --window-hours or lower APD_DRIFT__MIN_RECORDS)",
        )
    signals, snapshot = compute_signals(reference, current, config, settings)
    reasons = alert_reasons(signals, settings)
    message = "; ".join(reasons) if reasons else "no threshold passed"
    return Assessment("alert" if reasons else "ok", message, signals, reasons, snapshot)
