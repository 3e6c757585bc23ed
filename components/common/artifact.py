"""The model artifact: one folder per registered version, loaded the same way from the registry and from disk.

Layout::

    model.pt            weights + model config + preprocessing (+ training config)
    model.onnx          the same network for ONNX Runtime and OpenVINO (crops NCHW float32 -> one logit per crop, and
                        with an attribution head one logit per generator recipe and crop)
    model.int8.onnx     the same network quantized to int8 (served only when evaluation enabled an int8 variant)
    config.json         everything serving needs besides weights: threshold, calibration temperature, confidence
                        bands, labels, versions, and the inference variants (runtime/precision) the evaluate step
                        found faithful
    metrics.json        test metrics at registration
    reference.parquet   per-image features and predictions of the validation split (the drift reference)

``models:/<name>@<alias>``, ``models:/<name>/<version>`` and ``runs:/`` URIs are downloaded through MLflow; a
plain path (what KServe's storage initializer leaves in ``/mnt/models``) is read in place.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.common.model_config import ModelConfig
from components.common.runtimes import EXACT_VARIANTS, ONNX_GENERATOR_LOGITS, ONNX_LOGITS
from components.common.transforms import probabilities

if TYPE_CHECKING:  # torch: only to train, export and explain; the predictor reads config.json alone
    from components.common.model import Detector

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
REFERENCE_FILE = "reference.parquet"
LABELS = ("real", "ai_generated")  # index = model output class (probability is of LABELS[1])


@dataclass(frozen=True)
class ArtifactConfig:
    """What serving needs to turn a probability into an answer, and where the model came from."""

    model: ModelConfig
    threshold: float  # probability at or above which the label is ai_generated (chosen on validation)
    dataset_version: str
    # Confidence from the distance to the threshold, relative to the room on that side: >= high -> "high",
    # >= medium -> "medium", else "low".
    confidence_bands: dict[str, float] = field(default_factory=lambda: {"medium": 0.4, "high": 0.8})
    labels: tuple[str, str] = LABELS
    # runtime/precision variants allowed to serve this model (see common.runtimes); fp32 ones always are.
    variants: tuple[str, ...] = EXACT_VARIANTS
    # Calibration: probability = sigmoid(image logit / temperature), fitted on validation (1.0: uncalibrated,
    # what artifacts from before calibration get).
    temperature: float = 1.0

    def probabilities(self, image_logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from per-image logits (the one place the temperature is applied)."""
        return probabilities(image_logits, self.temperature)

    def label(self, probability: float) -> str:
        """ai_generated at or above the threshold, else real."""
        return self.labels[1] if probability >= self.threshold else self.labels[0]

    def margin(self, probability: float) -> float:
        """Distance to the threshold relative to the room on that side of it: 0 at the threshold, 1 at 0 or 1."""
        room = (1 - self.threshold) if probability >= self.threshold else self.threshold
        return abs(probability - self.threshold) / room if room > 0 else 1.0

    def confidence(self, probability: float) -> str:
        """low / medium / high from ``margin`` and the confidence bands."""
        margin = self.margin(probability)
        if margin >= self.confidence_bands["high"]:
            return "high"
        if margin >= self.confidence_bands["medium"]:
            return "medium"
        return "low"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "threshold": self.threshold,
            "dataset_version": self.dataset_version,
            "confidence_bands": self.confidence_bands,
            "labels": list(self.labels),
            "variants": list(self.variants),
            "temperature": self.temperature,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactConfig:
        missing = {"model", "threshold", "dataset_version", "confidence_bands", "labels"} - data.keys()
        if missing:
            raise ValueError(f"model artifact config is missing {sorted(missing)}")
        return cls(
            model=ModelConfig.from_dict(data["model"]),
            threshold=float(data["threshold"]),
            dataset_version=str(data["dataset_version"]),
            confidence_bands={k: float(v) for k, v in data["confidence_bands"].items()},
            labels=(data["labels"][0], data["labels"][1]),
            variants=tuple(data.get("variants", EXACT_VARIANTS)),  # artifacts from before variants: fp32 only
            temperature=float(data.get("temperature", 1.0)),  # artifacts from before calibration: uncalibrated
        )


def write_artifact(folder: Path, checkpoint: Path, config: ArtifactConfig, metrics: dict[str, float]) -> None:
    """Assemble an artifact folder (the reference statistics are added by the caller as REFERENCE_FILE)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, folder / WEIGHTS_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def export_onnx(model: Detector, path: Path) -> None:
    """Write ``model`` as ONNX with a dynamic batch axis: input ``images`` (NCHW float32), output ``logits`` (N,),
    and with an attribution head a second output ``generator_logits`` (N, G)."""
    import torch

    class AllOutputs(torch.nn.Module):
        def __init__(self, net: Detector) -> None:
            super().__init__()
            self.net = net

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.net.forward_all(images)

    side = model.config.preprocessing.image_size
    model.eval()
    outputs = [ONNX_LOGITS, ONNX_GENERATOR_LOGITS] if model.config.generators else [ONNX_LOGITS]
    torch.onnx.export(
        AllOutputs(model) if model.config.generators else model,
        (torch.zeros(2, 3, side, side),),
        str(path),
        input_names=["images"],
        output_names=outputs,
        dynamic_axes={"images": {0: "batch"}} | {name: {0: "batch"} for name in outputs},
        opset_version=17,
        dynamo=False,
    )


def fetch_artifact(uri: str, dst: Path) -> Path:
    """A local folder holding the artifact at ``uri`` (registry and run URIs are downloaded into ``dst``)."""
    if uri.startswith(("models:/", "runs:/", "s3://", "file://")):
        try:
            import mlflow
        except ImportError as exc:  # the predictor image: KServe's storage initializer downloads the model
            raise ValueError(
                f"{uri}: registry, run and S3 URIs are downloaded through MLflow, which is not installed here; "
                "serve a folder (on KServe, the storageUri is downloaded into /mnt/models)"
            ) from exc

        dst.mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    return Path(uri)


def read_config(folder: Path) -> ArtifactConfig:
    """The artifact's configuration (``config.json``), without loading the network: all the predictor needs besides
    the ONNX export."""
    return ArtifactConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text()))


def load_artifact(folder: Path) -> tuple[Detector, ArtifactConfig]:
    """The torch model (eval mode) and its config, both from the folder: no project-side defaults."""
    from components.common.model import load_checkpoint

    config = read_config(folder)
    model, _ = load_checkpoint(folder / WEIGHTS_FILE)
    if model.config != config.model:
        raise ValueError(f"{folder}: {WEIGHTS_FILE} and {CONFIG_FILE} disagree on the model config")
    return model, config
