"""The training pipeline: ingest -> validate -> train -> evaluate -> register -> deploy (a canary, off by default).

The same definition runs under KFP's local runner (``apd pipeline run --local``) and on Kubeflow Pipelines
(``apd pipeline compile`` writes the YAML the Kubeflow UI uploads; ``apd pipeline submit`` sends it to a host).
Resources of the train step are compile-time task settings (KFP does not take them as run parameters).
"""

from dataclasses import dataclass

from kfp import dsl
from kfp.dsl import Markdown

from components.common.settings import QualityGate, ValidationRules
from components.deploy import deploy
from components.evaluate import evaluate
from components.ingest import ingest
from components.register import register
from components.train import TrainConfig, train
from components.validate import validate

PIPELINE_NAME = "apd-training"
# The run parameters' defaults come from the configs the stages use (a test checks the stages' own defaults agree):
# `apd pipeline run` and a run started from the Kubeflow UI then train and gate alike.
_TRAIN, _RULES, _GATE = TrainConfig(), ValidationRules(), QualityGate()


@dataclass(frozen=True)
class TrainResources:
    """What the train step asks the cluster for."""

    gpus: int = 1  # NVIDIA GPUs (0: CPU only)
    accelerator: str = "nvidia.com/gpu"  # Kubernetes resource name of the accelerator
    cpu: str = "4"  # CPU request and limit
    memory: str = "16G"  # memory request and limit


def build_training_pipeline(resources: TrainResources = TrainResources()) -> dsl.graph_component.GraphComponent:
    """The pipeline with the train step's resource requests set to ``resources``."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Ingest, validate, train, evaluate and register the AI-generated product photo detector.",
    )
    def training_pipeline(  # noqa: PLR0913, PLR0917 - a KFP pipeline takes one argument per run parameter
        source: str,
        image_column: str = "image",
        label_column: str = "label",
        label_map: str = "",
        by_reference: bool = False,
        max_class_ratio: float = _RULES.max_class_ratio,
        warn_class_ratio: float = _RULES.warn_class_ratio,
        min_images_per_split: int = _RULES.min_images_per_split,
        epochs: int = _TRAIN.epochs,
        batch_size: int = _TRAIN.batch_size,
        image_size: int = _TRAIN.image_size,
        max_crops: int = _TRAIN.max_crops,
        augment: bool = True,
        lr: float = _TRAIN.lr,
        weight_decay: float = _TRAIN.weight_decay,
        warmup_epochs: float = _TRAIN.warmup_epochs,
        patience: int = _TRAIN.patience,
        freeze_backbone_epochs: int = _TRAIN.freeze_backbone_epochs,
        max_train_images: int = _TRAIN.max_train_images,
        backbone: str = _TRAIN.backbone,
        weights: str = _TRAIN.weights,
        init_model: str = _TRAIN.init_model,
        num_workers: int = _TRAIN.num_workers,
        seed: int = _TRAIN.seed,
        train_nodes: int = _TRAIN.train_nodes,
        train_procs: int = _TRAIN.train_procs,
        min_accuracy: float = _GATE.min_accuracy,
        min_f1: float = _GATE.min_f1,
        max_auc_drop: float = _GATE.max_auc_drop,
        max_fpr: float = _GATE.max_fpr,
        canary_percent: int = 0,
    ) -> Markdown:
        """Returns the evaluation report (metrics, gate, comparison with the champion).

        Args:
            source: Class-folder tree, ``s3://bucket/prefix`` or Parquet export (see the ingest component).
            image_column: Parquet sources: the image column.
            label_column: Parquet sources: the label column.
            label_map: Parquet sources: label values to labels, e.g. ``0=ai_generated,1=real``.
            by_reference: Ingest: copy no image, the dataset points at the source files or S3 objects (not Parquet);
                every later read checks each unchanged since ingest.
            max_class_ratio: Validation: largest majority/minority class ratio.
            warn_class_ratio: Validation: class ratio that raises a warning.
            min_images_per_split: Validation: fewest images per split.
            epochs: Training: most epochs (early stopping may end sooner).
            batch_size: Training: images per step.
            image_size: Training: side of the native-resolution crops the network sees.
            max_crops: Training: most crops scored per image at evaluation and serving.
            augment: Training: matched augmentation of both classes (rescale, blur, noise, JPEG, flips).
            lr: Training: peak AdamW learning rate.
            weight_decay: Training: AdamW weight decay.
            warmup_epochs: Training: warm-up length in epochs.
            patience: Training: early-stopping patience in epochs.
            freeze_backbone_epochs: Training: epochs that train only the head.
            max_train_images: Training: stratified subset size (0: all).
            backbone: Training: timm backbone.
            weights: Training: optional backbone weights file.
            init_model: Training: a registered detector to fine-tune, e.g. ``models:/apd-detector@champion``
                (empty: start from ImageNet weights).
            num_workers: Training: DataLoader workers.
            seed: Training: seed.
            train_nodes: Training: machines training together; more than 1 runs a Kubeflow TrainJob of that many
                pods (``APD_TRAINJOB__*``).
            train_procs: Training: processes per machine (torchrun), each on its slice of every batch; 2 on this
                machine: ``-p train_procs=2``. batch_size must be a multiple of train_nodes x train_procs.
            min_accuracy: Quality gate: lowest test accuracy.
            min_f1: Quality gate: lowest test F1.
            max_auc_drop: Quality gate: largest test ROC AUC lost to JPEG q75 or a 0.5x downscale.
            max_fpr: Evaluation: the threshold flags at most this share of the validation real images (the F1-best
                cut among those).
            canary_percent: Deploy: share of requests (percent) the new version gets as a KServe canary; 0 (the
                default) only registers it.
        """
        ingested = ingest(
            source=source,
            image_column=image_column,
            label_column=label_column,
            label_map=label_map,
            by_reference=by_reference,
        )
        validated = validate(
            dataset=ingested.outputs["dataset"],
            max_class_ratio=max_class_ratio,
            warn_class_ratio=warn_class_ratio,
            min_images_per_split=min_images_per_split,
        )
        trained = train(
            dataset=ingested.outputs["dataset"],
            epochs=epochs,
            batch_size=batch_size,
            image_size=image_size,
            max_crops=max_crops,
            augment=augment,
            lr=lr,
            weight_decay=weight_decay,
            warmup_epochs=warmup_epochs,
            patience=patience,
            freeze_backbone_epochs=freeze_backbone_epochs,
            max_train_images=max_train_images,
            backbone=backbone,
            weights=weights,
            init_model=init_model,
            num_workers=num_workers,
            seed=seed,
            train_nodes=train_nodes,
            train_procs=train_procs,
        ).after(validated)
        trained.set_cpu_request(resources.cpu).set_cpu_limit(resources.cpu)
        trained.set_memory_request(resources.memory).set_memory_limit(resources.memory)
        if resources.gpus:
            trained.set_accelerator_type(resources.accelerator).set_accelerator_limit(resources.gpus)
        evaluated = evaluate(
            dataset=ingested.outputs["dataset"],
            model=trained.outputs["model"],
            run_id=trained.outputs["Output"],
            min_accuracy=min_accuracy,
            min_f1=min_f1,
            max_auc_drop=max_auc_drop,
            max_fpr=max_fpr,
        )
        registered = register(
            dataset=ingested.outputs["dataset"],
            model=trained.outputs["model"],
            evaluation=evaluated.outputs["evaluation"],
            exported=evaluated.outputs["exported"],
            run_id=trained.outputs["Output"],
        )
        deploy(model_version=registered.outputs["Output"], canary_percent=canary_percent)
        return evaluated.outputs["report"]

    return training_pipeline


training_pipeline = build_training_pipeline()
