"""One run of the drift job: its verdict, its signals and where its outputs are, and the table `apd drift run`
prints."""

from dataclasses import asdict, dataclass, field
from typing import Any

from components.common.settings import DriftSettings
from components.monitoring.signals import DriftSignals, Verdict


@dataclass(frozen=True)
class DriftResult:
    """One run of the drift job: the verdict, its signals (None without a verdict) and where the outputs are."""

    model_name: str
    model_version: str
    endpoint: str
    window_start: str  # ISO 8601, UTC, inclusive
    window_end: str  # exclusive
    run_at: str
    verdict: Verdict
    message: str
    records: int  # usable records in the window
    excluded: dict[str, int]  # decode_error, unpaired: records left out
    signals: DriftSignals | None
    alerts: list[str]  # one sentence per passed threshold
    report_uri: str | None  # s3:// of the HTML report (None without a verdict)
    summary_uri: str
    mlflow_run_uri: str
    seconds: dict[str, float] = field(default_factory=dict)  # read, evidently, total

    @property
    def alert(self) -> bool:
        return self.verdict == "alert"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self, settings: DriftSettings) -> str:
        """The signals as a table, then the verdict and where the outputs are."""
        excluded = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in self.excluded.items())
        lines = [
            f"drift of {self.model_name} v{self.model_version}, endpoint {self.endpoint}: "
            f"{self.window_start} -> {self.window_end}",
            f"records: {self.records} usable (left out: {excluded})",
        ]
        s = self.signals
        if s is not None:
            lines[-1] += f"; reference: {s.reference_records} validation images"
            rows = [
                ("drift share", s.drift_share, None, f">= {settings.drift_share_threshold:.2f}", s.dataset_drift),
                (
                    "mean probability",
                    s.mean_probability,
                    s.mean_probability_reference,
                    f"|shift| >= {settings.probability_shift_threshold:.2f}",
                    abs(s.mean_probability_shift) >= settings.probability_shift_threshold,
                ),
                (
                    "probability drift score",
                    s.probability_drift.score,
                    None,
                    f"{s.probability_drift.method} {s.probability_drift.threshold:g}",
                    s.probability_drift.detected,
                ),
                (
                    "confidence drop",
                    s.confidence_drop,
                    None,
                    f"> {settings.confidence_drop_threshold:.2f}",
                    s.confidence_drop > settings.confidence_drop_threshold,
                ),
                ("mean margin", s.mean_margin, s.mean_margin_reference, "", None),
                ("low-confidence ratio", s.low_confidence_ratio, s.low_confidence_ratio_reference, "", None),
                ("ai_generated ratio", s.ai_generated_ratio, s.ai_generated_ratio_reference, "", None),
                ("ai_declared ratio", s.ai_declared_ratio, None, "", None),
            ]
            rows += [
                (f"  {name} ({d.method})", d.score, None, f"{d.threshold:g}", d.detected)
                for name, d in s.features.items()
            ]
            lines += ["", f"{'signal':<34} {'current':>10} {'reference':>10}  {'alert when':<24} state"]
            for name, value, reference, bar, passed in rows:
                ref = "" if reference is None else f"{reference:.4f}"
                state = "" if passed is None else ("DRIFT" if passed else "ok")
                lines.append(f"{name:<34} {value:>10.4f} {ref:>10}  {bar:<24} {state}".rstrip())
            if s.skipped_features:
                lines.append(f"not compared (empty in the reference or the window): {', '.join(s.skipped_features)}")
        lines += ["", f"verdict: {self.verdict.upper().replace('_', ' ')}: {self.message}"]
        if self.report_uri:
            lines.append(f"report:  {self.report_uri}")
        lines += [f"summary: {self.summary_uri}", f"mlflow:  {self.mlflow_run_uri}"]
        return "\n".join(lines)
