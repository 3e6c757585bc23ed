"""Un-augmented batches of a split's images, each as the crops the served model scores, and the model's
per-image logits over them: what evaluation, registration and the training loop's validation share. ``ImageRows``
is the torch Dataset over a dataset's rows that training's images build on too."""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from components.common.dataset_files import DatasetImages, image_refs
from components.common.model import Detector
from components.common.settings import ImageLimits
from components.common.transforms import Preprocessing, aggregate, image_crops, load_image

LABEL_VALUE = {"real": 0.0, "ai_generated": 1.0}  # the positive class is ai_generated
CropBatch = tuple[torch.Tensor, list[int], torch.Tensor]  # all crops of a batch of images, crops per image, labels
Item = TypeVar("Item")


class ImageRows(TorchDataset[Item], abc.ABC):
    """Rows of a dataset as items, their images read through ``DatasetImages``. A DataLoader batch comes through
    ``__getitems__``: its images' bytes read in parallel, then made into items one after another in index order,
    so that each image draws the same random numbers as with one ``__getitem__`` after another."""

    def __init__(self, dataset: DatasetImages, rows: pd.DataFrame) -> None:
        self.images = dataset
        self.refs = image_refs(rows)

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> Item:
        return self.item(index, self.images.read(self.refs[index]))

    def __getitems__(self, indices: list[int]) -> list[Item]:
        data = self.images.read_batch([self.refs[i] for i in indices])
        return [self.item(i, image) for i, image in zip(indices, data, strict=True)]

    @abc.abstractmethod
    def item(self, index: int, data: bytes) -> Item:
        """The item of row ``index`` from its image's bytes."""


class EvalImages(ImageRows[tuple[np.ndarray, float]]):
    """Images of a split, each as the crops the served model scores (``common.transforms.image_crops``), after
    ``change`` (a robustness condition) when given."""

    def __init__(
        self,
        dataset: DatasetImages,
        rows: pd.DataFrame,
        limits: ImageLimits,
        prep: Preprocessing,
        change: Callable[[Image.Image], Image.Image] | None = None,
    ) -> None:
        super().__init__(dataset, rows)
        self.labels = [LABEL_VALUE[label] for label in rows["label"]]
        self.limits, self.prep, self.change = limits, prep, change

    def item(self, index: int, data: bytes) -> tuple[np.ndarray, float]:
        image = load_image(data, self.limits, self.prep)
        if self.change is not None:
            image = self.change(image)
        return image_crops(image, self.prep), self.labels[index]

    def changed(self, change: Callable[[Image.Image], Image.Image]) -> EvalImages:
        """The same images as ``change`` leaves them."""
        copied = copy.copy(self)
        copied.change = change
        return copied


def collate_crops(items: list[tuple[np.ndarray, float]]) -> CropBatch:
    """Images with different numbers of crops in one batch: the crops stacked, and how many belong to each."""
    crops = torch.from_numpy(np.concatenate([c for c, _ in items]))
    return crops, [len(c) for c, _ in items], torch.tensor([label for _, label in items], dtype=torch.float32)


def eval_loader(
    dataset: DatasetImages, rows: pd.DataFrame, prep: Preprocessing, limits: ImageLimits
) -> DataLoader[Any]:
    """Un-augmented batches of ``rows`` as ``CropBatch``es, preprocessed as ``prep`` says (evaluation, checks)."""
    return DataLoader(EvalImages(dataset, rows, limits, prep), batch_size=16, collate_fn=collate_crops)


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
