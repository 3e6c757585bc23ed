"""Train: fit the detector on the train split, early-stopped on the validation split, tracked in MLflow.

Seeded and deterministic on a CPU (same data + config -> same metrics). AdamW with a linear warm-up then a
cosine schedule, optional frozen backbone for the first epochs, augmentation from ``common.transforms``.

Attribution: when the train images name at least two generator recipes (the manifest's ``generator`` of
ai_generated rows), the model gets an attribution head over them, trained with cross-entropy on the ai_generated
images whose recipe is known (weighted ``ATTRIBUTION_WEIGHT`` next to the binary loss; real images and images of
no named recipe add nothing to it).
"""

import copy
import dataclasses
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import mlflow
import numpy as np
import pandas as pd
import structlog
import torch
from kfp.dsl import Dataset, Input, Model, Output
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from components.common.artifact import fetch_artifact, load_artifact
from components.common.dataset import read_manifest, split_rows
from components.common.loaders import LABEL_VALUE, EvalImages, eval_loader, predict_logits
from components.common.model import Detector, build_model, save_checkpoint
from components.common.model_config import CHECKPOINT_FILE, UNKNOWN_GENERATOR, ModelConfig
from components.common.seeding import seed_everything, seed_worker
from components.common.settings import ImageLimits
from components.common.transforms import (
    Augmentation,
    Preprocessing,
    load_image,
    train_transform,
)
from components.stage import stage

log = structlog.get_logger(__name__)

ATTRIBUTION_WEIGHT = 0.5  # weight of the attribution cross-entropy next to the binary cross-entropy
NO_GENERATOR = -1  # attribution target of an image without a trained recipe (real, or unnamed generator)


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters: saved in the checkpoint and logged to MLflow as run parameters."""

    backbone: str = "tf_efficientnet_lite0"  # timm backbone; lite0 starts from the bundled ImageNet weights
    weights: str = ""  # optional backbone weights file (e.g. EfficientNet-B0 ImageNet); empty: default init
    # A registered detector to fine-tune (models:/apd-detector@champion, runs:/..., or an artifact folder): its
    # weights initialise backbone and head; its backbone and image size must be this run's. Empty: a fresh one.
    init_model: str = ""
    image_size: int = 128  # side of the square crops the network sees, at the image's native resolution
    max_crops: int = 8  # most crops scored per image at evaluation and serving (their logits are averaged)
    epochs: int = 8  # most epochs; early stopping may end sooner
    batch_size: int = 32  # images (one crop each) per optimisation step
    lr: float = 3e-4  # peak learning rate of AdamW
    weight_decay: float = 1e-2  # AdamW weight decay
    warmup_epochs: float = 1.0  # linear warm-up length before the cosine decay
    patience: int = 3  # epochs without validation-loss improvement before stopping
    freeze_backbone_epochs: int = 0  # train only the head for this many first epochs
    max_train_images: int = 0  # train on at most this many images (a class-stratified subset); 0: all
    num_workers: int = 1  # DataLoader worker processes decoding and augmenting images
    seed: int = 42  # seed of initialisation, shuffling and augmentation
    # Matched augmentation of both classes (rescale, blur, noise, JPEG re-compression, flips) before the crop.
    augmentation: Augmentation = field(default_factory=Augmentation)

    def model_config(self, generators: tuple[str, ...] = ()) -> ModelConfig:
        """The model this config trains, with an attribution head over ``generators`` (none when empty)."""
        prep = Preprocessing(image_size=self.image_size, max_crops=self.max_crops)
        return ModelConfig(backbone=self.backbone, preprocessing=prep, generators=generators)

    def flat_params(self) -> dict[str, Any]:
        """Every field as an MLflow parameter (the augmentation's as ``augmentation.<name>``)."""
        params = dataclasses.asdict(self)
        augmentation = params.pop("augmentation")
        return params | {f"augmentation.{k}": v for k, v in augmentation.items()}


@dataclass(frozen=True)
class TrainResult:
    """What training produced."""

    checkpoint: Path
    run_id: str
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    train_images_per_second: float = 0.0


def training_generators(rows: pd.DataFrame) -> tuple[str, ...]:
    """The recipes an attribution head learns from ``rows`` (the train images): the sorted distinct non-empty
    ``generator`` values of ai_generated rows ("unknown" is no recipe); none when fewer than two."""
    if "generator" not in rows:
        return ()
    fake = rows.loc[rows["label"] == "ai_generated", "generator"].fillna("").astype(str)
    names = sorted(set(fake) - {"", UNKNOWN_GENERATOR})
    return tuple(names) if len(names) >= 2 else ()


def generator_targets(rows: pd.DataFrame, generators: tuple[str, ...]) -> list[int]:
    """Per row, the class index of its recipe in ``generators``; ``NO_GENERATOR`` for real images and for
    ai_generated images of no trained recipe."""
    index = {name: i for i, name in enumerate(generators)}
    recipes = rows["generator"].fillna("").astype(str) if "generator" in rows else pd.Series([""] * len(rows))
    return [
        index.get(recipe, NO_GENERATOR) if label == "ai_generated" else NO_GENERATOR
        for label, recipe in zip(rows["label"], recipes, strict=True)
    ]


TrainItem = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # crop, binary label, generator class (or NO_GENERATOR)


class TrainImages(TorchDataset[TrainItem]):
    """Images of the train split, decoded the way serving decodes them, augmented, one random native crop each,
    with the binary label and the generator class index (``generator_targets``)."""

    def __init__(
        self,
        dataset_dir: Path,
        rows: pd.DataFrame,
        limits: ImageLimits,
        prep: Preprocessing,
        aug: Augmentation,
        generators: tuple[str, ...] = (),
    ):
        self.paths = [dataset_dir / p for p in rows["path"]]
        self.labels = torch.tensor([LABEL_VALUE[label] for label in rows["label"]], dtype=torch.float32)
        self.generators = torch.tensor(generator_targets(rows, generators), dtype=torch.long)
        self.transform, self.limits, self.prep = train_transform(prep, aug), limits, prep

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> TrainItem:
        image = load_image(self.paths[index].read_bytes(), self.limits, self.prep)
        return torch.from_numpy(self.transform(image)), self.labels[index], self.generators[index]


def lr_lambda(total_steps: int, warmup_steps: int) -> Any:
    """Linear warm-up to 1, then cosine decay to 0 over the remaining steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _set_backbone_trainable(model: Detector, trainable: bool) -> None:
    for param in model.backbone.parameters():
        param.requires_grad_(trainable)


def make_train_loader(
    cfg: TrainConfig,
    dataset_dir: Path,
    manifest: pd.DataFrame,
    limits: ImageLimits,
    prep: Preprocessing,
    generator: torch.Generator,
    generators: tuple[str, ...] = (),
) -> DataLoader[TrainItem]:
    """Shuffled, augmented, seeded batches of the train split (the subset when ``max_train_images`` is set), with
    attribution targets over ``generators``."""
    rows = split_rows(manifest, "train", cfg.max_train_images, cfg.seed)
    return DataLoader(
        TrainImages(dataset_dir, rows, limits, prep, cfg.augmentation, generators),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        generator=generator,
        num_workers=cfg.num_workers,
        worker_init_fn=seed_worker,
        persistent_workers=cfg.num_workers > 0,
    )


def detector_loss(
    logits: torch.Tensor, generator_logits: torch.Tensor, targets: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy + ``ATTRIBUTION_WEIGHT`` x the attribution cross-entropy over the images with a
    generator class (``classes`` != ``NO_GENERATOR``; none: the binary term alone)."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
    known = classes != NO_GENERATOR
    if generator_logits.shape[1] and bool(known.any()):
        attribution = nn.functional.cross_entropy(generator_logits[known], classes[known])
        loss = loss + ATTRIBUTION_WEIGHT * attribution
    return loss


def train_one_epoch(
    model: Detector,
    loader: DataLoader[Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    frozen_backbone: bool,
) -> tuple[float, float, int]:
    """One pass over ``loader``: (mean loss (binary + attribution), accuracy at 0.5, images seen)."""
    _set_backbone_trainable(model, not frozen_backbone)
    model.train()
    if frozen_backbone:
        model.backbone.eval()  # frozen BatchNorm statistics too
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", disable=not sys.stderr.isatty())
    for images, targets, classes in bar:
        optimizer.zero_grad(set_to_none=True)
        logits, generator_logits = model.forward_all(images)
        loss = detector_loss(logits, generator_logits, targets, classes)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * len(targets)
        correct += int(((logits > 0).float() == targets).sum())
        seen += len(targets)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    return loss_sum / seen, correct / seen, seen


def initial_model(cfg: TrainConfig, generators: tuple[str, ...] = ()) -> Detector:
    """The network training starts from: the detector at ``cfg.init_model``, else a fresh one; with an attribution
    head over ``generators``. A detector to fine-tune whose recipes differ gets a new, untrained attribution head
    (backbone and binary head keep their weights)."""
    model_cfg = cfg.model_config(generators)
    if not cfg.init_model:
        return build_model(model_cfg, Path(cfg.weights) if cfg.weights else None)
    if cfg.weights:
        raise ValueError("pass init_model (a whole detector to fine-tune) or weights (backbone weights), not both")
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = load_artifact(fetch_artifact(cfg.init_model, Path(tmp)))
    if dataclasses.replace(model.config, generators=generators) != model_cfg:
        raise ValueError(
            f"init_model {cfg.init_model} is {model.config.backbone} at {model.config.preprocessing.image_size} px "
            f"(model config {model.config.to_dict()}); this run trains {cfg.backbone} at {cfg.image_size} px: "
            "pass the backbone and image_size of the model to fine-tune"
        )
    if model.config.generators != generators:
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("attribution.")}
        model = Detector(model_cfg)
        model.load_state_dict(state, strict=False)  # all but the attribution head, which starts afresh
        log.info("attribution_head_rebuilt", init_model=cfg.init_model, generators=list(generators))
    log.info("fine_tuning", init_model=cfg.init_model)
    return model


def train_detector(
    cfg: TrainConfig, dataset_dir: Path, out_dir: Path, limits: ImageLimits, experiment_id: str, dataset_version: str
) -> TrainResult:
    """Train on ``dataset_dir``; writes ``out_dir/model.pt`` and logs everything to a new MLflow run."""
    generator = seed_everything(cfg.seed)
    manifest = read_manifest(dataset_dir)
    generators = training_generators(split_rows(manifest, "train", cfg.max_train_images, cfg.seed))
    model_cfg = cfg.model_config(generators)
    prep = model_cfg.preprocessing
    train_loader = make_train_loader(cfg, dataset_dir, manifest, limits, prep, generator, generators)
    train_set = cast(TrainImages, train_loader.dataset)
    # Validation decodes in this process: an idle persistent worker of its own measurably slowed training here.
    val_loader = eval_loader(dataset_dir, split_rows(manifest, "val"), prep, limits)
    val_set = cast(EvalImages, val_loader.dataset)
    if len(train_loader) == 0:
        raise ValueError(f"the train split has {len(train_set)} images, fewer than one batch of {cfg.batch_size}")

    model = initial_model(cfg, generators)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(steps, round(cfg.warmup_epochs * len(train_loader)))
    )
    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    train_seconds, train_images = 0.0, 0
    out_dir.mkdir(parents=True, exist_ok=True)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.set_tags({"dataset_version": dataset_version, "stage": "train"})
        mlflow.log_params({**cfg.flat_params(), "dataset_version": dataset_version,
                           "train_images": len(train_set), "val_images": len(val_set),
                           "generators": ",".join(generators) or "none"})  # fmt: skip
        for epoch in range(1, cfg.epochs + 1):
            frozen = epoch <= cfg.freeze_backbone_epochs
            started = time.perf_counter()
            train_loss, train_accuracy, seen = train_one_epoch(model, train_loader, optimizer, scheduler, epoch, frozen)
            train_seconds += time.perf_counter() - started
            train_images += seen
            logits, labels, val_loss = predict_logits(model, val_loader)
            probs = 1 / (1 + np.exp(-logits))
            metrics: dict[str, float] = {
                "train_loss": train_loss,
                "train_accuracy": train_accuracy,
                "val_loss": val_loss,
                "val_accuracy": float(((probs > 0.5) == labels).mean()),
                "val_roc_auc": float(roc_auc_score(labels, probs)) if len(set(labels)) == 2 else float("nan"),
                "lr": float(scheduler.get_last_lr()[0]),
            }
            history.append({"epoch": epoch, **metrics})
            mlflow.log_metrics(metrics, step=epoch)
            log.info("epoch_done", epoch=epoch, frozen_backbone=frozen, **{k: round(v, 4) for k, v in metrics.items()})
            if val_loss < best_loss:
                best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= cfg.patience:
                log.info("early_stopping", epoch=epoch, best_epoch=best_epoch, best_val_loss=round(best_loss, 4))
                break
        model.load_state_dict(best_state)
        checkpoint = out_dir / CHECKPOINT_FILE
        save_checkpoint(
            model,
            checkpoint,
            {"train_config": dataclasses.asdict(cfg), "dataset_version": dataset_version, "best_epoch": best_epoch},
        )
        rate = train_images / train_seconds if train_seconds else 0.0
        mlflow.log_metrics({"best_epoch": best_epoch, "best_val_loss": best_loss, "train_images_per_second": rate})
        mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")
    log.info("train_done", run_id=run.info.run_id, best_epoch=best_epoch, images_per_second=round(rate, 1))
    return TrainResult(checkpoint, run.info.run_id, best_epoch, history, rate)


@stage
def train(
    dataset: Input[Dataset],
    model: Output[Model],
    epochs: int = 8,
    batch_size: int = 32,
    image_size: int = 128,
    max_crops: int = 8,
    augment: bool = True,
    lr: float = 3e-4,
    weight_decay: float = 1e-2,
    warmup_epochs: float = 1.0,
    patience: int = 3,
    freeze_backbone_epochs: int = 0,
    max_train_images: int = 0,
    backbone: str = "tf_efficientnet_lite0",
    weights: str = "",
    init_model: str = "",
    num_workers: int = 1,
    seed: int = 42,
) -> str:
    """Train the detector on the dataset's train split, early-stopped on its validation split.

    Args:
        dataset: The validated dataset (images + manifest.parquet).
        model: Output folder holding ``model.pt`` (weights, model config, preprocessing, train config).
        epochs: Most training epochs.
        batch_size: Images per step.
        image_size: Side in pixels of the square crops the network sees at native resolution.
        max_crops: Most crops scored per image at evaluation and serving (logits averaged).
        augment: Matched augmentation of both classes (rescale 0.5-1.5x, blur, noise, JPEG q60-100, flips).
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_epochs: Linear warm-up length, in epochs.
        patience: Epochs without validation-loss improvement before early stopping.
        freeze_backbone_epochs: Epochs that train only the head.
        max_train_images: Train on a stratified subset of this size (0: all).
        backbone: timm backbone name.
        weights: Optional backbone weights file.
        init_model: A registered detector to fine-tune instead of starting fresh, e.g.
            ``models:/apd-detector@champion`` (same backbone and image size).
        num_workers: DataLoader worker processes.
        seed: Seed for initialisation, shuffling and augmentation.

    Returns:
        The MLflow run id, which evaluate and register log into.
    """
    from pathlib import Path

    from components.common.logging import configure_logging
    from components.common.settings import Settings
    from components.common.tracking import setup_tracking
    from components.common.transforms import Augmentation
    from components.train import TrainConfig, train_detector

    settings = Settings()
    configure_logging(settings.logging)
    cfg = TrainConfig(
        backbone=backbone,
        weights=weights,
        init_model=init_model,
        image_size=image_size,
        max_crops=max_crops,
        augmentation=Augmentation() if augment else Augmentation.off(),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        warmup_epochs=warmup_epochs,
        patience=patience,
        freeze_backbone_epochs=freeze_backbone_epochs,
        max_train_images=max_train_images,
        num_workers=num_workers,
        seed=seed,
    )
    version = str(dataset.metadata["dataset_version"])
    experiment_id = setup_tracking(settings.mlflow)
    result = train_detector(cfg, Path(dataset.path), Path(model.path), settings.images, experiment_id, version)
    model.metadata.update({"dataset_version": version, "mlflow_run_id": result.run_id, "backbone": backbone})
    return result.run_id
