"""Evaluate: test-split metrics with a threshold chosen on validation, the quality gate, and the champion duel.

The decision threshold maximises F1 on the validation split (never on test). The test split then gives
accuracy, precision, recall, F1, ROC AUC, the confusion matrix and the ROC curve: to MLflow (with PNG plots) and
to KFP as ``Metrics`` and ``ClassificationMetrics``. A model under a bar stops the pipeline. When a ``champion``
is registered, it is scored on the same test split with its own threshold and the comparison is reported.
"""

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import structlog
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output
from mlflow.exceptions import MlflowException
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score, roc_curve

from components.common.artifact import LABELS, fetch_artifact, load_artifact
from components.common.dataset import read_manifest
from components.common.model import load_checkpoint
from components.common.settings import ImageLimits, QualityGate
from components.stage import stage
from components.train import CHECKPOINT_FILE, eval_loader, predict_probabilities, split_rows

log = structlog.get_logger(__name__)

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc")


@dataclass(frozen=True)
class Evaluation:
    """The outcome of evaluation: everything register needs, JSON-able."""

    threshold: float
    metrics: dict[str, float]  # test metrics of the candidate
    confusion: list[list[int]]  # rows = true label, columns = predicted, order LABELS
    roc: dict[str, list[float]]  # fpr, tpr, thresholds
    val_predictions: dict[str, float]  # sha256 -> probability, for the drift reference
    gate_failures: list[str] = field(default_factory=list)
    champion: dict[str, Any] | None = None  # {"version": ..., "metrics": {...}} when one was registered
    beats_champion: bool = True

    @property
    def passed(self) -> bool:
        return not self.gate_failures

    def to_markdown(self) -> str:
        lines = [f"# Evaluation: {'PASSED' if self.passed else 'FAILED'} the quality gate", ""]
        lines += [f"Decision threshold (chosen on validation): **{self.threshold:.4f}**", ""]
        duel = f" champion v{self.champion['version']} |" if self.champion else ""
        header = "| metric | candidate |" + duel
        lines += [header, "| --- | ---: |" + (" ---: |" if self.champion else "")]
        for name in METRIC_NAMES:
            row = f"| {name} | {self.metrics[name]:.4f} |"
            if self.champion:
                row += f" {self.champion['metrics'][name]:.4f} |"
            lines.append(row)
        (tn, fp), (fn, tp) = self.confusion
        lines += ["", f"Confusion matrix (test): real→real {tn}, real→ai {fp}, ai→real {fn}, ai→ai {tp}."]
        lines += ["", *[f"- gate: {failure}" for failure in self.gate_failures]]
        if self.champion:
            verdict = "beats" if self.beats_champion else "does not beat"
            lines.append(f"- the candidate {verdict} champion v{self.champion['version']} on test F1")
        return "\n".join(lines) + "\n"


def choose_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The probability cut that maximises F1 on (validation) data; ties go to the cut nearest 0.5."""
    candidates = np.unique(np.concatenate([probs, [0.5]]))
    scores = [(f1_score(labels, probs >= t, zero_division=0), -abs(t - 0.5), float(t)) for t in candidates]
    return max(scores)[2]


def classification_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = probs >= threshold
    both = len(np.unique(labels)) == 2
    return {
        "accuracy": float((predicted == labels).mean()),
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, probs)) if both else float("nan"),
    }


def gate_failures(metrics: dict[str, float], gate: QualityGate) -> list[str]:
    """One sentence per bar the metrics miss, naming the metric, its value and the bar."""
    bars = {"accuracy": gate.min_accuracy, "f1": gate.min_f1}
    return [
        f"test {name} {metrics[name]:.4f} is below the bar {bar:.4f}"
        for name, bar in bars.items()
        if not metrics[name] >= bar
    ]


def _score_champion(model_name: str, dataset_dir: Path, test_rows: Any, limits: ImageLimits) -> dict[str, Any] | None:
    """Metrics of the current champion on the same test split (with its own threshold), or None."""
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        champion, config = load_artifact(fetch_artifact(f"models:/{model_name}@champion", Path(tmp)))
        probs, labels, _ = predict_probabilities(champion, eval_loader(dataset_dir, test_rows, champion, limits))
    return {"version": version.version, "metrics": classification_metrics(labels, probs, config.threshold)}


def _log_plots(evaluation: Evaluation) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(evaluation.roc["fpr"], evaluation.roc["tpr"], label=f"AUC {evaluation.metrics['roc_auc']:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend(loc="lower right")
    mlflow.log_figure(fig, "plots/roc_curve.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(np.array(evaluation.confusion), cmap="Blues")
    for (row, col), value in np.ndenumerate(np.array(evaluation.confusion)):
        ax.text(col, row, str(value), ha="center", va="center")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=LABELS, yticklabels=LABELS, xlabel="predicted", ylabel="true")
    ax.set_title("Confusion matrix (test)")
    mlflow.log_figure(fig, "plots/confusion_matrix.png")
    plt.close(fig)


def evaluate_detector(
    checkpoint_dir: Path, dataset_dir: Path, limits: ImageLimits, gate: QualityGate, run_id: str, model_name: str
) -> Evaluation:
    """Score the checkpoint, apply the gate, compare with the champion; logs to the MLflow run ``run_id``."""
    model, _ = load_checkpoint(checkpoint_dir / CHECKPOINT_FILE)
    manifest = read_manifest(dataset_dir)
    val_rows, test_rows = split_rows(manifest, "val"), split_rows(manifest, "test")
    val_probs, val_labels, _ = predict_probabilities(model, eval_loader(dataset_dir, val_rows, model, limits))
    threshold = choose_threshold(val_labels, val_probs)
    probs, labels, _ = predict_probabilities(model, eval_loader(dataset_dir, test_rows, model, limits))
    metrics = classification_metrics(labels, probs, threshold)
    fpr, tpr, cuts = roc_curve(labels, probs)
    champion = _score_champion(model_name, dataset_dir, test_rows, limits)
    beats = champion is None or (metrics["f1"], metrics["accuracy"]) > (
        champion["metrics"]["f1"],
        champion["metrics"]["accuracy"],
    )
    evaluation = Evaluation(
        threshold=threshold,
        metrics=metrics,
        confusion=confusion_matrix(labels, probs >= threshold, labels=[0, 1]).tolist(),
        roc={"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": np.clip(cuts, 0, 1).tolist()},
        val_predictions=dict(zip(val_rows["sha256"], map(float, val_probs), strict=True)),
        gate_failures=gate_failures(metrics, gate),
        champion=champion,
        beats_champion=beats,
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()} | {"threshold": threshold})
        if champion:
            mlflow.log_metrics({f"champion_test_{k}": v for k, v in champion["metrics"].items()})
        mlflow.set_tag("quality_gate", "passed" if evaluation.passed else "failed")
        _log_plots(evaluation)
        mlflow.log_text(evaluation.to_markdown(), "evaluation.md")
    log.info(
        "evaluation_done",
        threshold=round(threshold, 4),
        passed=evaluation.passed,
        beats_champion=beats,
        **{k: round(v, 4) for k, v in metrics.items()},
    )
    return evaluation


@stage
def evaluate(
    dataset: Input[Dataset],
    model: Input[Model],
    run_id: str,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    evaluation: Output[Artifact],
    report: Output[Markdown],
    min_accuracy: float = 0.85,
    min_f1: float = 0.80,
) -> bool:
    """Evaluate the trained model on the test split and apply the quality gate (fails the pipeline below it).

    Args:
        dataset: The validated dataset.
        model: The trained checkpoint folder.
        run_id: MLflow run of the training, which receives the test metrics and plots.
        metrics: Test accuracy, precision, recall, F1, ROC AUC and the threshold (KFP scalar metrics).
        classification: Confusion matrix and ROC curve for the Kubeflow UI.
        evaluation: JSON with metrics, threshold, validation predictions and the champion comparison.
        report: Markdown summary, including the comparison with the current champion.
        min_accuracy: Quality gate: lowest accepted test accuracy.
        min_f1: Quality gate: lowest accepted test F1.

    Returns:
        Whether the candidate beats the current champion (True when there is none).
    """
    import json
    from dataclasses import asdict
    from pathlib import Path

    from components.common.errors import QualityGateError
    from components.common.logging import configure_logging
    from components.common.settings import QualityGate, Settings
    from components.common.tracking import setup_tracking
    from components.evaluate import evaluate_detector

    settings = Settings()
    configure_logging(settings.logging)
    setup_tracking(settings.mlflow)
    gate = QualityGate(min_accuracy=min_accuracy, min_f1=min_f1)
    result = evaluate_detector(
        Path(model.path), Path(dataset.path), settings.images, gate, run_id, settings.mlflow.model_name
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    metrics.log_metric("threshold", result.threshold)
    classification.log_confusion_matrix(["real", "ai_generated"], result.confusion)
    classification.log_roc_curve(result.roc["fpr"], result.roc["tpr"], result.roc["thresholds"])
    Path(evaluation.path).write_text(json.dumps(asdict(result)))
    Path(report.path).write_text(result.to_markdown())
    evaluation.metadata.update({"dataset_version": dataset.metadata["dataset_version"], "passed": result.passed})
    if not result.passed:
        raise QualityGateError("the model failed the quality gate: " + "; ".join(result.gate_failures))
    return result.beats_champion
