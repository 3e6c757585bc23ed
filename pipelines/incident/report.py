"""The drill's scores and its before / during / after table."""

from dataclasses import dataclass

from components.monitoring.result import DriftResult


@dataclass
class PhaseResult:
    name: str
    model_version: str
    traffic: str
    images: int
    accuracy: float
    false_negative_rate: float
    drift: DriftResult | None
    detection: str = ""


def scores(pairs: list[tuple[str, str]]) -> tuple[float, float]:
    """Accuracy and the false negative rate (the share of generated images called real) of (truth, prediction)s."""
    accuracy = sum(truth == predicted for truth, predicted in pairs) / len(pairs)
    fakes = [predicted for truth, predicted in pairs if truth == "ai_generated"]
    return accuracy, sum(p == "real" for p in fakes) / max(1, len(fakes))


def table(results: list[PhaseResult]) -> str:
    """A markdown row per phase, then the alerts' reasons."""
    lines = [
        "| phase | model | traffic | images | accuracy | false negative rate | drift share | mean p shift "
        "| confidence drop | alert | time to detection |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        s = r.drift.signals if r.drift else None
        share = f"{s.drift_share:.2f}" if s else "-"
        shift = f"{s.mean_probability_shift:+.3f}" if s else "-"
        drop = f"{s.confidence_drop:+.1%}" if s else "-"
        verdict = r.drift.verdict if r.drift else "-"
        lines.append(
            f"| {r.name} | v{r.model_version} | {r.traffic} | {r.images} | {r.accuracy:.3f} "
            f"| {r.false_negative_rate:.3f} | {share} | {shift} | {drop} | {verdict} | {r.detection} |"
        )
    why = [f"- {r.name}: {'; '.join(r.drift.alerts)}" for r in results if r.drift and r.drift.alerts]
    return "\n".join([*lines, "", *why] if why else lines)
