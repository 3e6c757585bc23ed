"""The frozen ModelConfig saved with every checkpoint and model artifact: what rebuilds the network and feeds it.

Kept apart from the network (``components.common.model``, torch and timm) so that what serves a model's ONNX export
reads its configuration without torch (the predictor image holds no torch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

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
