"""The training pipeline: ingest -> validate (train, evaluate and register follow).

The same definition runs under KFP's local runner (``apd pipeline run --local``) and on Kubeflow Pipelines.
"""

from kfp import dsl
from kfp.dsl import Markdown

from components.ingest import ingest
from components.validate import validate

PIPELINE_NAME = "apd-training"


@dsl.pipeline(name=PIPELINE_NAME, description="Ingest and validate labelled product photos.")
def training_pipeline(
    source: str,
    image_column: str = "image",
    label_column: str = "label",
    label_map: str = "",
    max_class_ratio: float = 1.5,
    warn_class_ratio: float = 1.25,
    min_images_per_split: int = 10,
) -> Markdown:
    """Ingest ``source`` into a versioned dataset and validate it; returns the validation summary.

    Args:
        source: Class-folder tree, ``s3://bucket/prefix`` or Parquet export (see the ingest component).
        image_column: Parquet sources: the image column.
        label_column: Parquet sources: the label column.
        label_map: Parquet sources: label values to labels, e.g. ``0=ai_generated,1=real``.
        max_class_ratio: Validation: largest majority/minority class ratio.
        warn_class_ratio: Validation: class ratio that raises a warning.
        min_images_per_split: Validation: fewest images per split.
    """
    ingested = ingest(source=source, image_column=image_column, label_column=label_column, label_map=label_map)
    ingested.set_display_name("ingest")
    validated = validate(
        dataset=ingested.outputs["dataset"],
        max_class_ratio=max_class_ratio,
        warn_class_ratio=warn_class_ratio,
        min_images_per_split=min_images_per_split,
    )
    validated.set_display_name("validate")
    return validated.outputs["summary"]
