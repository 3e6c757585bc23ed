"""Evaluate: test-split metrics with a calibration and a threshold fitted on validation, robustness, recall per
generator, the quality gate, the serving variants and the champion duel.

Every image is scored the way the server scores it: its native-resolution crops (``common.transforms``), their
logits averaged. On the validation split a temperature is fitted (``common.calibration``) and the decision
threshold maximises F1 on the calibrated probabilities (never on test). The test split then gives accuracy,
precision, recall, F1, ROC AUC, the false-positive rate on real images, the expected calibration error before and
after calibration, the confusion matrix and the ROC curve; the same metrics on JPEG q75, 0.5x, 0.75x and 2x copies
of the test images (``ROBUSTNESS``); the recall on each generator recipe (the manifest's ``generator``) and, for a
model with an attribution head, the accuracy of the served generator name on each recipe's test images (a recipe
the model was not trained on is right when it is called unknown). They go to MLflow (with PNG plots) and to KFP as
``Metrics`` and ``ClassificationMetrics``. A model under a bar stops the pipeline. When a ``champion`` is
registered, it is scored on the same test split with its own preprocessing, temperature and threshold.

The model is also exported for the fast runtimes and each runtime/precision variant judged against torch fp32
(``common.variants``: ONNX checked within 1e-4, bf16/int8 enabled only when faithful).
"""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import structlog
import torch
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output
from mlflow.exceptions import MlflowException
from PIL import Image
from sklearn.metrics import confusion_matrix, roc_curve
from torch.utils.data import DataLoader

from components.common.artifact import LABELS, fetch_artifact, load_artifact
from components.common.calibration import calibrated, expected_calibration_error, fit_temperature
from components.common.dataset import split_rows
from components.common.dataset_files import DatasetImages
from components.common.loaders import EvalImages, collate_crops, eval_loader, predict_logits
from components.common.metrics import (
    choose_threshold,
    classification_metrics,
    flat_metrics,
    overall_attribution_accuracy,
)
from components.common.model import Detector, load_checkpoint
from components.common.model_config import CHECKPOINT_FILE, UNKNOWN_GENERATOR, ModelConfig
from components.common.runtimes import open_engine
from components.common.settings import ImageLimits, QualityGate
from components.common.transforms import (
    Preprocessing,
    jpeg_roundtrip,
)
from components.common.variants import engine_scores, export_variants, score_variants
from components.stage import stage

log = structlog.get_logger(__name__)

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc", "fpr_real")
CALIBRATION_IMAGES = 64  # training images that calibrate the int8 quantization


def _rescaled(image: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.LANCZOS if factor < 1 else Image.Resampling.BICUBIC)


# Copies of the test images that a marketplace sees of the same photo: re-compressed, shrunk, enlarged.
ROBUSTNESS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q75": lambda image: jpeg_roundtrip(image, 75),
    "downscale_0.5x": lambda image: _rescaled(image, 0.5),
    "downscale_0.75x": lambda image: _rescaled(image, 0.75),
    "upscale_2x": lambda image: _rescaled(image, 2.0),
}
GATED_ROBUSTNESS = ("jpeg_q75", "downscale_0.5x")  # the conditions whose ROC AUC drop the gate bounds


@dataclass(frozen=True)
class Evaluation:
    """The outcome of evaluation: everything register needs, JSON-able."""

    threshold: float  # on calibrated probabilities
    temperature: float  # calibration: probability = sigmoid(mean crop logit / temperature)
    metrics: dict[str, float]  # test metrics of the candidate (calibrated; ece_before/ece_after included)
    confusion: list[list[int]]  # rows = true label, columns = predicted, order LABELS
    roc: dict[str, list[float]]  # fpr, tpr, thresholds
    val_predictions: dict[str, float]  # sha256 -> calibrated probability, for the drift reference
    robustness: dict[str, dict[str, float]] = field(default_factory=dict)  # condition -> test metrics, auc_drop
    generators: dict[str, dict[str, float]] = field(default_factory=dict)  # recipe -> test images, recall
    # recipe -> test images, accuracy of the attributed generator (models with an attribution head only)
    attribution: dict[str, dict[str, float]] = field(default_factory=dict)
    onnx_max_abs_diff: float = 0.0  # fp32 ONNX Runtime / OpenVINO vs torch, on validation
    # runtime/precision -> roc_auc and accuracy (test), flips / images / flip_rate_upper (validation + test),
    # largest |probability - torch's|, enabled (or the error that stopped the variant from running)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    gate_failures: list[str] = field(default_factory=list)
    champion: dict[str, Any] | None = None  # {"version": ..., "metrics": {...}} when one was registered
    beats_champion: bool = True

    @property
    def passed(self) -> bool:
        return not self.gate_failures

    def to_markdown(self) -> str:
        lines = [f"# Evaluation: {'PASSED' if self.passed else 'FAILED'} the quality gate", ""]
        lines += [
            f"Decision threshold (chosen on validation): **{self.threshold:.4f}**; calibration temperature "
            f"{self.temperature:.3f}; expected calibration error (test) {self.metrics['ece_before']:.3f} before, "
            f"**{self.metrics['ece_after']:.3f}** after calibration.",
            "",
        ]
        duel = f" champion v{self.champion['version']} |" if self.champion else ""
        header = "| metric (test) | candidate |" + duel
        lines += [header, "| --- | ---: |" + (" ---: |" if self.champion else "")]
        for name in METRIC_NAMES:
            row = f"| {name} | {self.metrics[name]:.4f} |"
            if self.champion:
                row += f" {self.champion['metrics'].get(name, float('nan')):.4f} |"
            lines.append(row)
        (tn, fp), (fn, tp) = self.confusion
        lines += ["", f"Confusion matrix (test): real→real {tn}, real→ai {fp}, ai→real {fn}, ai→ai {tp}."]
        if self.robustness:
            lines += ["", "| test copies | ROC AUC | AUC drop | accuracy | false-positive rate (real) |"]
            lines.append("| --- | ---: | ---: | ---: | ---: |")
            lines.append(
                f"| original | {self.metrics['roc_auc']:.4f} | | {self.metrics['accuracy']:.4f} |"
                f" {self.metrics['fpr_real']:.4f} |"
            )
            for name, r in self.robustness.items():
                cells = f"{r['roc_auc']:.4f} | {r['auc_drop']:+.4f} | {r['accuracy']:.4f} | {r['fpr_real']:.4f}"
                lines.append(f"| {name} | {cells} |")
        if self.generators:
            lines += [
                "",
                "| generator (test) | images | recall | attribution accuracy |",
                "| --- | ---: | ---: | ---: |",
            ]
            for name, g in self.generators.items():
                attributed = f"{self.attribution[name]['accuracy']:.4f}" if name in self.attribution else ""
                lines.append(f"| {name} | {int(g['images'])} | {g['recall']:.4f} | {attributed} |")
            if self.attribution:
                lines += ["", f"Attribution accuracy (test, ai_generated images of a named recipe): "
                          f"**{overall_attribution_accuracy(self.attribution):.4f}**."]  # fmt: skip
        lines += ["", "| serving variant | test ROC AUC | test accuracy | changed decisions (val+test) |"
                  " 95 % upper bound | max abs diff vs torch | enabled |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
        for name, v in self.variants.items():
            if "error" in v:
                lines.append(f"| {name} | failed: {v['error'][:120]} | | | | | no |")
                continue
            lines.append(
                f"| {name} | {v['roc_auc']:.4f} | {v['accuracy']:.4f} | {v['flips']} / {v['images']} |"
                f" {v['flip_rate_upper']:.4f} | {v['max_abs_diff']:.2e} | {'yes' if v['enabled'] else 'no'} |"
            )
        lines += ["", *[f"- gate: {failure}" for failure in self.gate_failures]]
        if self.champion:
            verdict = "beats" if self.beats_champion else "does not beat"
            lines.append(f"- the candidate {verdict} champion v{self.champion['version']} on test F1")
        return "\n".join(lines) + "\n"


def gate_failures(metrics: dict[str, float], robustness: dict[str, dict[str, float]], gate: QualityGate) -> list[str]:
    """One sentence per bar the metrics miss, naming the metric, its value and the bar."""
    bars = {"accuracy": gate.min_accuracy, "f1": gate.min_f1}
    failures = [
        f"test {name} {metrics[name]:.4f} is below the bar {bar:.4f}"
        for name, bar in bars.items()
        if not metrics[name] >= bar
    ]
    failures += [
        f"test ROC AUC drops by {robustness[name]['auc_drop']:.4f} on {name} copies; the bar is {gate.max_auc_drop:.4f}"
        for name in GATED_ROBUSTNESS
        if name in robustness and not robustness[name]["auc_drop"] <= gate.max_auc_drop
    ]
    return failures


def robustness_metrics(
    model: Detector, base: EvalImages, temperature: float, threshold: float, original: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Test metrics on each ``ROBUSTNESS`` copy of the test images, with the ROC AUC lost against ``original``."""
    results = {}
    for name, change in ROBUSTNESS.items():
        loader = DataLoader(base.changed(change), batch_size=16, collate_fn=collate_crops)
        logits, labels, _ = predict_logits(model, loader)
        scores = classification_metrics(labels, calibrated(logits, temperature), threshold)
        results[name] = {**scores, "auc_drop": original["roc_auc"] - scores["roc_auc"]}
    return results


def generator_recall(rows: pd.DataFrame, probs: np.ndarray, threshold: float) -> dict[str, dict[str, float]]:
    """Recall on the ai_generated test images of each generator recipe (the manifest's ``generator``)."""
    if "generator" not in rows:
        return {}
    fake = (rows["label"] == "ai_generated").to_numpy()
    names = rows["generator"].fillna("").replace("", "unnamed").to_numpy()
    out = {}
    for name in sorted(set(names[fake])):
        members = fake & (names == name)
        out[str(name)] = {"images": float(members.sum()), "recall": float((probs[members] >= threshold).mean())}
    return out


def attribution_accuracy(
    rows: pd.DataFrame, generator_probs: np.ndarray, model: ModelConfig
) -> dict[str, dict[str, float]]:
    """Per recipe, on the ai_generated images of ``rows`` with a named generator: how often the served generator
    name (``ModelConfig.attribute`` of each row of ``generator_probs``) is right; for a recipe the model was not
    trained on the right name is unknown. Empty for a model without an attribution head."""
    if not model.generators or "generator" not in rows:
        return {}
    recipes = rows["generator"].fillna("").astype(str).to_numpy()
    named = (rows["label"] == "ai_generated").to_numpy() & (recipes != "") & (recipes != UNKNOWN_GENERATOR)
    served = np.array([model.attribute(p)[0] for p in generator_probs])
    out = {}
    for name in sorted(set(recipes[named])):
        members = named & (recipes == name)
        right = name if name in model.generators else UNKNOWN_GENERATOR
        out[str(name)] = {"images": float(members.sum()), "accuracy": float((served[members] == right).mean())}
    return out


def _score_champion(
    model_name: str, dataset: DatasetImages, test_rows: Any, limits: ImageLimits
) -> dict[str, Any] | None:
    """Metrics of the current champion on the same test split (its own preprocessing, temperature and threshold),
    or None."""
    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, "champion")
    except MlflowException:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        champion, config = load_artifact(fetch_artifact(f"models:/{model_name}@champion", Path(tmp)))
        prep = champion.config.preprocessing
        logits, labels, _ = predict_logits(champion, eval_loader(dataset, test_rows, prep, limits))
    probs = config.probabilities(logits)
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
    checkpoint_dir: Path,
    dataset: DatasetImages,
    limits: ImageLimits,
    gate: QualityGate,
    run_id: str,
    model_name: str,
    export_dir: Path,
    max_fpr: float = 1.0,
) -> Evaluation:
    """Score the checkpoint and its serving variants (exported to ``export_dir``), calibrate, choose the threshold
    (at most ``max_fpr`` of the validation real images flagged), apply the gate, compare with the champion; logs to
    the MLflow run ``run_id``."""
    model, _ = load_checkpoint(checkpoint_dir / CHECKPOINT_FILE)
    prep: Preprocessing = model.config.preprocessing
    manifest = dataset.manifest()
    val_rows, test_rows = split_rows(manifest, "val"), split_rows(manifest, "test")
    val_loader, test_loader = (eval_loader(dataset, rows, prep, limits) for rows in (val_rows, test_rows))
    val, test = list(val_loader), list(test_loader)
    val_logits, val_labels, _ = predict_logits(model, val)
    temperature = fit_temperature(val_logits, val_labels)
    val_probs = calibrated(val_logits, temperature)
    threshold = choose_threshold(val_labels, val_probs, max_fpr)
    logits, labels, _ = predict_logits(model, test)
    probs = calibrated(logits, temperature)
    metrics = classification_metrics(labels, probs, threshold)
    metrics["ece_before"] = expected_calibration_error(calibrated(logits, 1.0), labels)
    metrics["ece_after"] = expected_calibration_error(probs, labels)
    robustness = robustness_metrics(model, test_loader.dataset, temperature, threshold, metrics)  # type: ignore[arg-type]
    generators = generator_recall(test_rows, probs, threshold)
    _, test_generator_probs = engine_scores(
        open_engine(export_dir, "torch", "fp32", torch.get_num_threads(), model), test
    )
    attribution = attribution_accuracy(test_rows, test_generator_probs, model.config)
    calibration = eval_loader(dataset, split_rows(manifest, "train", limit=CALIBRATION_IMAGES), prep, limits)
    onnx_max_abs_diff = export_variants(model, export_dir, list(calibration), val, temperature)
    variants = score_variants(model, export_dir, val, test, temperature, threshold)
    fpr, tpr, cuts = roc_curve(labels, probs)
    champion = _score_champion(model_name, dataset, test_rows, limits)
    beats = champion is None or (metrics["f1"], metrics["accuracy"]) > (
        champion["metrics"]["f1"],
        champion["metrics"]["accuracy"],
    )
    evaluation = Evaluation(
        threshold=threshold,
        temperature=temperature,
        metrics=metrics,
        confusion=confusion_matrix(labels, probs >= threshold, labels=[0, 1]).tolist(),
        roc={"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": np.clip(cuts, 0, 1).tolist()},
        val_predictions=dict(zip(val_rows["sha256"], map(float, val_probs), strict=True)),
        robustness=robustness,
        generators=generators,
        attribution=attribution,
        onnx_max_abs_diff=onnx_max_abs_diff,
        variants=variants,
        gate_failures=gate_failures(metrics, robustness, gate),
        champion=champion,
        beats_champion=beats,
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(flat_metrics(evaluation))
        mlflow.set_tag("quality_gate", "passed" if evaluation.passed else "failed")
        _log_plots(evaluation)
        mlflow.log_text(evaluation.to_markdown(), "evaluation.md")
    log.info(
        "evaluation_done",
        threshold=round(threshold, 4),
        temperature=round(temperature, 4),
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
    max_auc_drop: float = 0.10,
    max_fpr: float = 0.05,
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
        max_auc_drop: Quality gate: largest test ROC AUC lost on JPEG q75 or 0.5x-downscaled test copies.
        max_fpr: Operating point: the threshold flags at most this share of the validation split's real images.

    Returns:
        Whether the candidate beats the current champion (True when there is none).
    """
    import json
    from dataclasses import asdict
    from pathlib import Path

    from components.common.dataset_files import DatasetImages
    from components.common.errors import QualityGateError
    from components.common.logging import configure_logging
    from components.common.metrics import flat_metrics
    from components.common.settings import QualityGate, Settings
    from components.common.tracking import setup_tracking
    from components.evaluate import evaluate_detector

    settings = Settings()
    configure_logging(settings.logging)
    setup_tracking(settings.mlflow)
    gate = QualityGate(min_accuracy=min_accuracy, min_f1=min_f1, max_auc_drop=max_auc_drop)
    result = evaluate_detector(
        Path(model.path),
        DatasetImages(dataset.path, settings.s3),
        settings.images,
        gate,
        run_id,
        settings.mlflow.model_name,
        Path(exported.path),
        max_fpr,
    )
    for name, value in flat_metrics(result).items():
        metrics.log_metric(name, value)
    classification.log_confusion_matrix(["real", "ai_generated"], result.confusion)
    classification.log_roc_curve(result.roc["fpr"], result.roc["tpr"], result.roc["thresholds"])
    Path(evaluation.path).write_text(json.dumps(asdict(result)))
    Path(report.path).write_text(result.to_markdown())
    evaluation.metadata.update({"dataset_version": dataset.metadata["dataset_version"], "passed": result.passed})
    if not result.passed:
        raise QualityGateError("the model failed the quality gate: " + "; ".join(result.gate_failures))
    return result.beats_champion
