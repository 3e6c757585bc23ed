"""Evaluate: test-split metrics with a threshold chosen on validation, the quality gate, and the champion duel.

The decision threshold maximises F1 on the validation split (never on test). The test split then gives
accuracy, precision, recall, F1, ROC AUC, the confusion matrix and the ROC curve: to MLflow (with PNG plots) and
to KFP as ``Metrics`` and ``ClassificationMetrics``. A model under a bar stops the pipeline. When a ``champion``
is registered, it is scored on the same test split with its own threshold and the comparison is reported.

The model is also exported for the fast runtimes (``common.runtimes``): ONNX (fp32, must match torch within
``ONNX_TOLERANCE`` in probability on the validation images under ONNX Runtime and OpenVINO) and a static int8
quantization calibrated on training images. Every runtime/precision variant is scored on the test split with the
same threshold; bf16 and int8 variants are enabled for serving only when their test ROC AUC and accuracy stay
within ``MAX_AUC_DELTA`` and ``MAX_ACCURACY_DELTA`` of the torch fp32 model (either direction: a variant that
changes decisions is a different model, even when it scores better by chance on the test split).
"""

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import structlog
import torch
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output
from mlflow.exceptions import MlflowException
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score, roc_curve

from components.common.artifact import LABELS, export_onnx, fetch_artifact, load_artifact
from components.common.dataset import read_manifest
from components.common.model import Detector, load_checkpoint
from components.common.runtimes import EXACT_VARIANTS, INT8_FILE, ONNX_FILE, VARIANTS, open_engine, quantize_int8
from components.common.settings import ImageLimits, QualityGate
from components.stage import stage
from components.train import CHECKPOINT_FILE, eval_loader, predict_probabilities, split_rows

log = structlog.get_logger(__name__)

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc")
ONNX_TOLERANCE = 1e-4  # largest accepted probability difference between an fp32 runtime and torch
MAX_AUC_DELTA = 0.002  # a bf16/int8 variant's test ROC AUC must stay this close to fp32's ...
MAX_ACCURACY_DELTA = 0.005  # ... and its test accuracy this close (0.5 points)
CALIBRATION_IMAGES = 64  # training images that calibrate the int8 quantization
Batches = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Evaluation:
    """The outcome of evaluation: everything register needs, JSON-able."""

    threshold: float
    metrics: dict[str, float]  # test metrics of the candidate
    confusion: list[list[int]]  # rows = true label, columns = predicted, order LABELS
    roc: dict[str, list[float]]  # fpr, tpr, thresholds
    val_predictions: dict[str, float]  # sha256 -> probability, for the drift reference
    onnx_max_abs_diff: float = 0.0  # fp32 ONNX Runtime / OpenVINO vs torch, on validation
    # runtime/precision -> test roc_auc, accuracy, largest |probability - torch's| and whether serving may use it
    # (or the error that stopped the variant from running)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
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
        lines += ["", "| serving variant | test ROC AUC | test accuracy | max abs diff vs torch | enabled |"]
        lines.append("| --- | ---: | ---: | ---: | --- |")
        for name, v in self.variants.items():
            if "error" in v:
                lines.append(f"| {name} | failed: {v['error'][:120]} | | | no |")
                continue
            lines.append(
                f"| {name} | {v['roc_auc']:.4f} | {v['accuracy']:.4f} | {v['max_abs_diff']:.2e} |"
                f" {'yes' if v['enabled'] else 'no'} |"
            )
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


def export_variants(model: Detector, out_dir: Path, calibration: Batches, val: Batches) -> float:
    """Write model.onnx and model.int8.onnx to ``out_dir``; returns the fp32 runtimes' largest deviation from torch
    on ``val`` (raises ValueError above ONNX_TOLERANCE: a broken export must never be served)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(model, out_dir / ONNX_FILE)
    quantize_int8(out_dir / ONNX_FILE, out_dir / INT8_FILE, (images.numpy() for images, _ in calibration))
    reference = _probabilities(open_engine(out_dir, "torch", "fp32", torch.get_num_threads(), model), val)
    worst = 0.0
    for runtime in ("onnxruntime", "openvino"):
        probs = _probabilities(open_engine(out_dir, runtime, "fp32", torch.get_num_threads()), val)
        worst = max(worst, float(np.abs(probs - reference).max()))
    if worst > ONNX_TOLERANCE:
        raise ValueError(
            f"the ONNX export differs from torch by {worst:.2e} in probability (tolerance {ONNX_TOLERANCE:.0e})"
        )
    return worst


def score_variants(model: Detector, folder: Path, test: Batches, threshold: float) -> dict[str, dict[str, Any]]:
    """Every runtime/precision variant on the test split; the non-fp32 ones enabled only when faithful."""
    labels = np.concatenate([targets.numpy() for _, targets in test])
    results: dict[str, dict[str, Any]] = {}
    reference: np.ndarray | None = None
    for name in VARIANTS:  # torch/fp32 first: the reference
        runtime, precision = name.split("/")
        try:
            probs = _probabilities(open_engine(folder, runtime, precision, torch.get_num_threads(), model), test)
        except Exception as exc:  # the runtimes raise their own error types; recorded, logged, variant disabled
            if name in EXACT_VARIANTS:
                raise
            log.warning("variant_failed", variant=name, error=str(exc), error_type=type(exc).__name__)
            results[name] = {"enabled": False, "error": f"{type(exc).__name__}: {exc}"}
            continue
        reference = probs if reference is None else reference
        scores = classification_metrics(labels, probs, threshold)
        results[name] = {
            "roc_auc": scores["roc_auc"],
            "accuracy": scores["accuracy"],
            "max_abs_diff": float(np.abs(probs - reference).max()),
            "enabled": name in EXACT_VARIANTS or is_faithful(scores, results["torch/fp32"]),
        }
    return results


def is_faithful(scores: dict[str, float], fp32: dict[str, Any]) -> bool:
    """Whether a variant's test ROC AUC and accuracy stay within the allowed distance of the fp32 model's."""
    slack = 1e-9  # accuracy moves in steps of 1/n: a difference of exactly the limit must not fail on rounding
    return (
        abs(scores["roc_auc"] - fp32["roc_auc"]) <= MAX_AUC_DELTA + slack
        and abs(scores["accuracy"] - fp32["accuracy"]) <= MAX_ACCURACY_DELTA + slack
    )


def _probabilities(engine: Any, batches: Batches) -> np.ndarray:
    return np.concatenate([engine(images.numpy()) for images, _ in batches])


def evaluate_detector(
    checkpoint_dir: Path,
    dataset_dir: Path,
    limits: ImageLimits,
    gate: QualityGate,
    run_id: str,
    model_name: str,
    export_dir: Path,
) -> Evaluation:
    """Score the checkpoint and its serving variants (exported to ``export_dir``), apply the gate, compare with
    the champion; logs to the MLflow run ``run_id``."""
    model, _ = load_checkpoint(checkpoint_dir / CHECKPOINT_FILE)
    manifest = read_manifest(dataset_dir)
    val_rows, test_rows = split_rows(manifest, "val"), split_rows(manifest, "test")
    val, test = (list(eval_loader(dataset_dir, rows, model, limits)) for rows in (val_rows, test_rows))
    val_probs, val_labels, _ = predict_probabilities(model, val)
    threshold = choose_threshold(val_labels, val_probs)
    probs, labels, _ = predict_probabilities(model, test)
    metrics = classification_metrics(labels, probs, threshold)
    calibration = eval_loader(dataset_dir, split_rows(manifest, "train", limit=CALIBRATION_IMAGES), model, limits)
    onnx_max_abs_diff = export_variants(model, export_dir, list(calibration), val)
    variants = score_variants(model, export_dir, test, threshold)
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
        onnx_max_abs_diff=onnx_max_abs_diff,
        variants=variants,
        gate_failures=gate_failures(metrics, gate),
        champion=champion,
        beats_champion=beats,
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()} | {"threshold": threshold})
        mlflow.log_metric("onnx_max_abs_diff", onnx_max_abs_diff)
        for name, v in variants.items():
            if "error" in v:
                continue
            prefix = name.replace("/", "_")
            mlflow.log_metrics({f"{prefix}_test_roc_auc": v["roc_auc"], f"{prefix}_test_accuracy": v["accuracy"]})
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
        variants_enabled=[name for name, v in variants.items() if v["enabled"]],
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
    exported: Output[Model],
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
        evaluation: JSON with metrics, threshold, validation predictions, the champion comparison and the serving
            variants (runtime/precision) with their test metrics and whether they are enabled.
        report: Markdown summary, including the comparison with the current champion and the serving variants.
        exported: model.onnx (fp32) and model.int8.onnx for the fast serving runtimes.
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
        Path(model.path),
        Path(dataset.path),
        settings.images,
        gate,
        run_id,
        settings.mlflow.model_name,
        Path(exported.path),
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
