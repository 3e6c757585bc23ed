"""Un-augmented batches of a split's images, each as the crops the served model scores, and the model's
per-image logits over them: what evaluation, registration and the training loop's validation share."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from components.common.model import Detector
from components.common.settings import ImageLimits
from components.common.transforms import Preprocessing, aggregate, image_crops, load_image

LABEL_VALUE = {"real": 0.0, "ai_generated": 1.0}  # the positive class is ai_generated
CropBatch = tuple[torch.Tensor, list[int], torch.Tensor]  # all crops of a batch of images, crops per image, labels


class EvalImages(TorchDataset[tuple[np.ndarray, float]]):
    """Images of a split, each as the crops the served model scores (``common.transforms.image_crops``)."""

    def __init__(self, dataset_dir: Path, rows: pd.DataFrame, limits: ImageLimits, prep: Preprocessing):
        self.paths = [dataset_dir / p for p in rows["path"]]
        self.labels = [LABEL_VALUE[label] for label in rows["label"]]
        self.limits, self.prep = limits, prep

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[np.ndarray, float]:
        image = load_image(self.paths[index].read_bytes(), self.limits, self.prep)
        return image_crops(image, self.prep), self.labels[index]


def collate_crops(items: list[tuple[np.ndarray, float]]) -> CropBatch:
    """Images with different numbers of crops in one batch: the crops stacked, and how many belong to each."""
    crops = torch.from_numpy(np.concatenate([c for c, _ in items]))
    return crops, [len(c) for c, _ in items], torch.tensor([label for _, label in items], dtype=torch.float32)


def eval_loader(dataset_dir: Path, rows: pd.DataFrame, prep: Preprocessing, limits: ImageLimits) -> DataLoader[Any]:
    """Un-augmented batches of ``rows`` as ``CropBatch``es, preprocessed as ``prep`` says (evaluation, checks)."""
    return DataLoader(EvalImages(dataset_dir, rows, limits, prep), batch_size=16, collate_fn=collate_crops)


@torch.inference_mode()
def predict_logits(model: Detector, batches: Iterable[CropBatch]) -> tuple[np.ndarray, np.ndarray, float]:
    """(one logit per image, labels, mean BCE loss of the uncalibrated probabilities) in eval mode."""
    model.eval()
    logits, labels = [], []
    for crops, counts, targets in batches:
        logits.append(aggregate(model(crops).numpy(), counts))
        labels.append(targets.numpy())
    image_logits, image_labels = np.concatenate(logits), np.concatenate(labels)
    loss = float(nn.functional.binary_cross_entropy_with_logits(torch.from_numpy(image_logits),
                                                                torch.from_numpy(image_labels).double()))  # fmt: skip
    return image_logits, image_labels, loss
