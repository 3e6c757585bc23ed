"""Train: fit the detector on the train split, early-stopped on the validation split, tracked in MLflow.

Seeded and deterministic on a CPU (same data + config -> same metrics). AdamW with a linear warm-up then a
cosine schedule, optional frozen backbone for the first epochs, augmentation from ``common.transforms``. One process,
or data-parallel in torchrun's (``components.train_ranks``, ``common.distributed``).

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
from contextlib import nullcontext
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
from tqdm import tqdm

from components.common.artifact import fetch_artifact, load_artifact
from components.common.dataset import split_rows
from components.common.dataset_files import DatasetImages
from components.common.distributed import (
    ONE_PROCESS,
    SeededRows,
    ShardedBatches,
    World,
    all_sum,
    average_buffers,
    data_parallel,
    expect_world,
    gather_scores,
    shard_dropout,
    shard_rows,
)
from components.common.loaders import LABEL_VALUE, ImageRows, eval_loader, predict_logits
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
    train_nodes: int = 1  # machines training together: 1 (this one) or, more, the pods of a Kubeflow TrainJob
    train_procs: int = 1  # training processes per machine (torchrun), each on its slice of every batch
    # Matched augmentation of both classes (rescale, blur, noise, JPEG re-compression, flips) before the crop.
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self) -> None:
        if self.train_nodes < 1 or self.train_procs < 1 or self.batch_size % self.world_size:
            raise ValueError(
                f"batch_size {self.batch_size} must split evenly over train_nodes x train_procs = {self.train_nodes} "
                f"x {self.train_procs} training processes (both at least 1): pass a multiple of the product"
            )

    @property
    def world_size(self) -> int:
        """Training processes in all; each takes ``batch_size / world_size`` images of every batch."""
        return self.train_nodes * self.train_procs

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


class TrainImages(ImageRows[TrainItem]):
    """Images of the train split (read through ``DatasetImages``, a batch's in parallel), decoded the way serving
    decodes them, augmented, one random native crop each, with the binary label and the generator class index
    (``generator_targets``)."""

    def __init__(
        self,
        dataset: DatasetImages,
        rows: pd.DataFrame,
        limits: ImageLimits,
        prep: Preprocessing,
        aug: Augmentation,
        generators: tuple[str, ...] = (),
    ):
        super().__init__(dataset, rows)
        self.labels = torch.tensor([LABEL_VALUE[label] for label in rows["label"]], dtype=torch.float32)
        self.generators = torch.tensor(generator_targets(rows, generators), dtype=torch.long)
        self.transform, self.limits, self.prep = train_transform(prep, aug), limits, prep

    def item(self, index: int, data: bytes) -> TrainItem:
        image = load_image(data, self.limits, self.prep)
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
    dataset: DatasetImages,
    manifest: pd.DataFrame,
    limits: ImageLimits,
    prep: Preprocessing,
    generator: torch.Generator,
    generators: tuple[str, ...] = (),
    world: World = ONE_PROCESS,
) -> DataLoader[TrainItem]:
    """This rank's slices of the shuffled global batches of the train split (the subset when ``max_train_images`` is
    set; ``ShardedBatches``), each image augmented from its own seed (``SeededRows``), with attribution targets over
    ``generators``."""
    rows = split_rows(manifest, "train", cfg.max_train_images, cfg.seed)
    images = TrainImages(dataset, rows, limits, prep, cfg.augmentation, generators)
    if len(images) < cfg.batch_size:
        raise ValueError(f"the train split has {len(images)} images, fewer than one batch of {cfg.batch_size}")
    return DataLoader(
        SeededRows(images, cfg.seed),
        batch_sampler=ShardedBatches(len(images), cfg.batch_size, cfg.seed, world),
        generator=generator,
        num_workers=cfg.num_workers,
        worker_init_fn=seed_worker,
        persistent_workers=cfg.num_workers > 0,
    )


def detector_loss(
    logits: torch.Tensor,
    generator_logits: torch.Tensor,
    targets: torch.Tensor,
    classes: torch.Tensor,
    known: float | None = None,
) -> torch.Tensor:
    """Binary cross-entropy + ``ATTRIBUTION_WEIGHT`` x the attribution cross-entropy over the images with a
    generator class (``classes`` != ``NO_GENERATOR``; none: the binary term alone). ``known``: the number the
    attribution term's sum is divided by, by default this batch's images with a class; a rank's slice of a global
    batch passes the global batch's over the number of ranks, so that DDP's mean of the ranks' gradients is the
    global batch's."""
    loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
    mask = classes != NO_GENERATOR
    count = float(mask.sum()) if known is None else known
    if generator_logits.shape[1]:  # a batch without a named image adds 0, still through the head (DDP expects it)
        attribution = nn.functional.cross_entropy(generator_logits[mask], classes[mask], reduction="sum")
        loss = loss + ATTRIBUTION_WEIGHT * attribution / max(count, 1.0)
    return loss


class TrainStep(nn.Module):
    """The loss of ``model`` on a batch (and its logits) as a module: what DistributedDataParallel wraps. Its output
    is the loss, not the model's outputs, so that an output the loss leaves out counts as unused."""

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, images: torch.Tensor, targets: torch.Tensor, classes: torch.Tensor, known: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, generator_logits = self.model.forward_all(images)
        return detector_loss(logits, generator_logits, targets, classes, known), logits.detach()


def train_one_epoch(
    model: Detector,
    step: nn.Module,
    loader: DataLoader[Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    frozen_backbone: bool,
    world: World,
) -> tuple[float, float, int]:
    """One pass over ``loader`` (this rank's slices of the global batches), ``step`` (``TrainStep``, data-parallel
    over the ranks) giving each slice's loss: (mean loss (binary + attribution), accuracy at 0.5, images seen), over
    all ranks."""
    _set_backbone_trainable(model, not frozen_backbone)
    model.train()
    if frozen_backbone:
        model.backbone.eval()  # frozen BatchNorm statistics too
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", disable=not (world.main and sys.stderr.isatty()))
    for images, targets, classes in bar:
        optimizer.zero_grad(set_to_none=True)
        [known] = all_sum([float((classes != NO_GENERATOR).sum())], world)
        loss, logits = step(images, targets, classes, known / world.size)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * len(targets)
        correct += int(((logits > 0).float() == targets).sum())
        seen += len(targets)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
    average_buffers(model, world)  # every rank validates, and rank 0 saves, the same model
    loss_sum, total_correct, total_seen = all_sum([loss_sum, correct, seen], world)
    return loss_sum / total_seen, total_correct / total_seen, int(total_seen)


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
    cfg: TrainConfig, dataset: DatasetImages, out_dir: Path, limits: ImageLimits, run_id: str, dataset_version: str
) -> TrainResult:
    """Train on ``dataset`` in this process, one of ``cfg.world_size`` (torchrun's ranks, each on its slice of
    every batch: ``components.train_ranks``). Rank 0 alone logs everything into the MLflow run ``run_id`` and
    writes ``out_dir/model.pt``."""
    world = expect_world(cfg.world_size)
    generator = seed_everything(cfg.seed)
    manifest = dataset.manifest()
    generators = training_generators(split_rows(manifest, "train", cfg.max_train_images, cfg.seed))
    model_cfg = cfg.model_config(generators)
    prep = model_cfg.preprocessing
    train_loader = make_train_loader(cfg, dataset, manifest, limits, prep, generator, generators, world)
    train_count = len(cast(SeededRows[TrainItem], train_loader.dataset))
    val_rows = split_rows(manifest, "val")
    # Validation decodes in this process (each rank its share of the images, gathered for the metrics): an idle
    # persistent worker of its own measurably slowed training here.
    val_loader = eval_loader(dataset, shard_rows(val_rows, world), prep, limits)

    # Rank 0 alone reads a detector to fine-tune (MLflow); DistributedDataParallel starts the others from its weights.
    model = initial_model(cfg, generators) if world.main else Detector(model_cfg)
    shard_dropout(model, world, cfg.seed)
    step = data_parallel(TrainStep(model), world, find_unused=cfg.freeze_backbone_epochs > 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(steps, round(cfg.warmup_epochs * len(train_loader)))
    )
    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    train_seconds, train_images = 0.0, 0
    tags = {"dataset_version": dataset_version, "stage": "train"}
    with mlflow.start_run(run_id=run_id, tags=tags) if world.main else nullcontext():
        if world.main:
            mlflow.log_params({**cfg.flat_params(), "dataset_version": dataset_version, "train_images": train_count,
                               "val_images": len(val_rows), "generators": ",".join(generators) or "none"})  # fmt: skip
        for epoch in range(1, cfg.epochs + 1):
            frozen = epoch <= cfg.freeze_backbone_epochs
            started = time.perf_counter()
            train_loss, train_accuracy, seen = train_one_epoch(
                model, step, train_loader, optimizer, scheduler, epoch, frozen, world
            )
            train_seconds += time.perf_counter() - started
            train_images += seen
            logits, labels, val_loss = gather_scores(*predict_logits(model, val_loader), world)
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
            if world.main:
                mlflow.log_metrics(metrics, step=epoch)
                log.info(
                    "epoch_done", epoch=epoch, frozen_backbone=frozen, **{k: round(v, 4) for k, v in metrics.items()}
                )
            if val_loss < best_loss:
                best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= cfg.patience:
                log.info("early_stopping", epoch=epoch, best_epoch=best_epoch, best_val_loss=round(best_loss, 4))
                break
        model.load_state_dict(best_state)
        checkpoint = out_dir / CHECKPOINT_FILE
        rate = train_images / train_seconds if train_seconds else 0.0
        if world.main:
            out_dir.mkdir(parents=True, exist_ok=True)
            save_checkpoint(
                model,
                checkpoint,
                {"train_config": dataclasses.asdict(cfg), "dataset_version": dataset_version, "best_epoch": best_epoch},
            )
            mlflow.log_metrics({"best_epoch": best_epoch, "best_val_loss": best_loss, "train_images_per_second": rate})
            mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")
            log.info("train_done", run_id=run_id, best_epoch=best_epoch, images_per_second=round(rate, 1))
    return TrainResult(checkpoint, run_id, best_epoch, history, rate)


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
    train_nodes: int = 1,
    train_procs: int = 1,
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
        train_nodes: Machines training together; more than 1 runs a Kubeflow TrainJob of that many pods.
        train_procs: Training processes per machine (torchrun), each on its slice of every batch.

    Returns:
        The MLflow run id, which evaluate and register log into.
    """
    from components.common.logging import configure_logging
    from components.common.settings import Settings
    from components.common.tracking import new_run, setup_tracking
    from components.common.transforms import Augmentation
    from components.train import TrainConfig
    from components.train_ranks import RankSpec, run_training

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
        train_nodes=train_nodes,
        train_procs=train_procs,
    )
    version = str(dataset.metadata["dataset_version"])
    run_id = new_run(setup_tracking(settings.mlflow))
    # The pods of a TrainJob read the dataset where it is stored; the processes of this machine, the step's copy.
    location = dataset.uri if train_nodes > 1 else dataset.path
    run_training(RankSpec(cfg, location, model.path, run_id, version), settings)
    model.metadata.update({"dataset_version": version, "mlflow_run_id": run_id, "backbone": backbone})
    return run_id
