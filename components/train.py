"""Train: fit the detector on the train split, early-stopped on the validation split, tracked in MLflow.

Seeded and deterministic on a CPU (same data + config -> same metrics). AdamW with a linear warm-up then a
cosine schedule, optional frozen backbone for the first epochs, augmentation from ``common.transforms``.
"""

import copy
import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Iterable
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
from components.common.dataset import read_manifest
from components.common.model import Detector, ModelConfig, build_model, save_checkpoint
from components.common.seeding import seed_everything, seed_worker
from components.common.settings import ImageLimits
from components.common.transforms import Preprocessing, eval_transform, load_image, train_transform
from components.stage import stage

log = structlog.get_logger(__name__)

CHECKPOINT_FILE = "model.pt"
LABEL_VALUE = {"real": 0.0, "ai_generated": 1.0}  # the positive class is ai_generated


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters: saved in the checkpoint and logged to MLflow as run parameters."""

    backbone: str = "tf_efficientnet_lite0"  # timm backbone; lite0 starts from the bundled ImageNet weights
    weights: str = ""  # optional backbone weights file (e.g. EfficientNet-B0 ImageNet); empty: default init
    # A registered detector to fine-tune (models:/apd-detector@champion, runs:/..., or an artifact folder): its
    # weights initialise backbone and head; its backbone and image size must be this run's. Empty: a fresh one.
    init_model: str = ""
    image_size: int = 224  # network input side
    epochs: int = 8  # most epochs; early stopping may end sooner
    batch_size: int = 16  # images per optimisation step
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 1e-2  # AdamW weight decay
    warmup_epochs: float = 1.0  # linear warm-up length before the cosine decay
    patience: int = 3  # epochs without validation-loss improvement before stopping
    freeze_backbone_epochs: int = 0  # train only the head for this many first epochs
    max_train_images: int = 0  # train on at most this many images (a class-stratified subset); 0: all
    num_workers: int = 1  # DataLoader worker processes decoding and augmenting images
    seed: int = 42  # seed of initialisation, shuffling and augmentation

    def model_config(self) -> ModelConfig:
        return ModelConfig(backbone=self.backbone, preprocessing=Preprocessing(image_size=self.image_size))


@dataclass(frozen=True)
class TrainResult:
    """What training produced."""

    checkpoint: Path
    run_id: str
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    train_images_per_second: float = 0.0


class ManifestImages(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Images of one split of an ingested dataset, decoded the way serving decodes them."""

    def __init__(self, dataset_dir: Path, rows: pd.DataFrame, transform: Any, limits: ImageLimits, prep: Preprocessing):
        self.paths = [dataset_dir / p for p in rows["path"]]
        self.labels = torch.tensor([LABEL_VALUE[label] for label in rows["label"]], dtype=torch.float32)
        self.transform, self.limits, self.prep = transform, limits, prep

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = load_image(self.paths[index].read_bytes(), self.limits, self.prep)
        return self.transform(image), self.labels[index]


def eval_loader(dataset_dir: Path, rows: pd.DataFrame, model: Detector, limits: ImageLimits) -> DataLoader[Any]:
    """Un-augmented batches of ``rows``, preprocessed as ``model``'s config says (evaluation, checks)."""
    prep = model.config.preprocessing
    return DataLoader(ManifestImages(dataset_dir, rows, eval_transform(prep), limits, prep), batch_size=32)


def split_rows(manifest: pd.DataFrame, split: str, limit: int = 0, seed: int = 0) -> pd.DataFrame:
    """Rows of ``split`` in a stable order; with ``limit`` a class-stratified deterministic subset."""
    rows = manifest[manifest["split"] == split].sort_values("sha256").reset_index(drop=True)
    if limit and len(rows) > limit:
        share = limit / len(rows)
        parts = [g.sample(n=max(1, round(len(g) * share)), random_state=seed) for _, g in rows.groupby("label")]
        rows = pd.concat(parts).sort_values("sha256").reset_index(drop=True)
    return rows


def lr_lambda(total_steps: int, warmup_steps: int) -> Any:
    """Linear warm-up to 1, then cosine decay to 0 over the remaining steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


@torch.inference_mode()
def predict_probabilities(
    model: Detector, loader: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[np.ndarray, np.ndarray, float]:
    """(probabilities, labels, mean BCE loss) over a loader, in eval mode."""
    model.eval()
    probs, labels, loss_sum, count = [], [], 0.0, 0
    criterion = nn.BCEWithLogitsLoss(reduction="sum")
    for images, targets in loader:
        logits = model(images)
        loss_sum += float(criterion(logits, targets))
        count += len(targets)
        probs.append(torch.sigmoid(logits).numpy())
        labels.append(targets.numpy())
    return np.concatenate(probs), np.concatenate(labels), loss_sum / max(1, count)


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
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled, augmented, seeded batches of the train split (the subset when ``max_train_images`` is set)."""
    rows = split_rows(manifest, "train", cfg.max_train_images, cfg.seed)
    return DataLoader(
        ManifestImages(dataset_dir, rows, train_transform(prep), limits, prep),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        generator=generator,
        num_workers=cfg.num_workers,
        worker_init_fn=seed_worker,
        persistent_workers=cfg.num_workers > 0,
    )


def train_one_epoch(
    model: Detector,
    loader: DataLoader[Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    frozen_backbone: bool,
) -> tuple[float, float, int]:
    """One pass over ``loader``: (mean loss, accuracy at 0.5, images seen)."""
    _set_backbone_trainable(model, not frozen_backbone)
    model.train()
    if frozen_backbone:
        model.backbone.eval()  # frozen BatchNorm statistics too
    criterion = nn.BCEWithLogitsLoss()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", disable=not sys.stderr.isatty())
    for images, targets in bar:
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        loss = criterion(logits, targets)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * len(targets)
        correct += int(((logits > 0).float() == targets).sum())
        seen += len(targets)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    return loss_sum / seen, correct / seen, seen


def initial_model(cfg: TrainConfig) -> Detector:
    """The network training starts from: the detector at ``cfg.init_model``, else a fresh one."""
    model_cfg = cfg.model_config()
    if not cfg.init_model:
        return build_model(model_cfg, Path(cfg.weights) if cfg.weights else None)
    if cfg.weights:
        raise ValueError("pass init_model (a whole detector to fine-tune) or weights (backbone weights), not both")
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = load_artifact(fetch_artifact(cfg.init_model, Path(tmp)))
    if model.config != model_cfg:
        raise ValueError(
            f"init_model {cfg.init_model} is {model.config.backbone} at {model.config.preprocessing.image_size} px "
            f"(model config {model.config.to_dict()}); this run trains {cfg.backbone} at {cfg.image_size} px: "
            "pass the backbone and image_size of the model to fine-tune"
        )
    log.info("fine_tuning", init_model=cfg.init_model)
    return model


def train_detector(
    cfg: TrainConfig, dataset_dir: Path, out_dir: Path, limits: ImageLimits, experiment_id: str, dataset_version: str
) -> TrainResult:
    """Train on ``dataset_dir``; writes ``out_dir/model.pt`` and logs everything to a new MLflow run."""
    generator = seed_everything(cfg.seed)
    model_cfg = cfg.model_config()
    prep = model_cfg.preprocessing
    manifest = read_manifest(dataset_dir)
    train_loader = make_train_loader(cfg, dataset_dir, manifest, limits, prep, generator)
    train_set = cast(ManifestImages, train_loader.dataset)
    val_set = ManifestImages(dataset_dir, split_rows(manifest, "val"), eval_transform(prep), limits, prep)
    # Validation decodes in this process: an idle persistent worker of its own measurably slowed training here.
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size)
    if len(train_loader) == 0:
        raise ValueError(f"the train split has {len(train_set)} images, fewer than one batch of {cfg.batch_size}")

    model = initial_model(cfg)
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
        mlflow.log_params({**dataclasses.asdict(cfg), "dataset_version": dataset_version,
                           "train_images": len(train_set), "val_images": len(val_set)})  # fmt: skip
        for epoch in range(1, cfg.epochs + 1):
            frozen = epoch <= cfg.freeze_backbone_epochs
            started = time.perf_counter()
            train_loss, train_accuracy, seen = train_one_epoch(model, train_loader, optimizer, scheduler, epoch, frozen)
            train_seconds += time.perf_counter() - started
            train_images += seen
            probs, labels, val_loss = predict_probabilities(model, val_loader)
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
    batch_size: int = 16,
    image_size: int = 224,
    lr: float = 1e-3,
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
        image_size: Network input side in pixels.
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
    from components.train import TrainConfig, train_detector

    settings = Settings()
    configure_logging(settings.logging)
    cfg = TrainConfig(
        backbone=backbone,
        weights=weights,
        init_model=init_model,
        image_size=image_size,
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
