"""The batch-scoring pipeline: every image below an S3 prefix, scored by the served model, into one Parquet file.

The scoring step (``components/predict.py``, running ``components/batch/``) calls the InferenceService over KServe's
v2 protocol; it never loads a copy of the model. ``apd pipeline compile`` writes ``pipelines/batch.yaml`` for the
Kubeflow UI.
"""

from kfp import dsl
from kfp.dsl import Dataset

from components.predict import batch_predict

PIPELINE_NAME = "apd-batch-scoring"
# The InferenceService's predictor inside the cluster (chart defaults: isvc apd-detector in namespace apd).
DEFAULT_URL = "http://apd-detector-predictor.apd.svc.cluster.local"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Score every image below an S3 prefix with the served AI-generated product photo detector.",
)
def batch_scoring_pipeline(  # noqa: PLR0913, PLR0917 - a KFP pipeline takes one argument per run parameter
    source: str,
    url: str = DEFAULT_URL,
    model_name: str = "apd-detector",
    protocol: str = "rest",
    concurrency: int = 8,
    batch_size: int = 8,
) -> Dataset:
    """Returns the predictions (Parquet, one row per image).

    Args:
        source: ``s3://bucket/prefix`` of the images to score.
        url: The model server: ``http://host[:port]`` for v2 REST, ``host:port`` for v2 gRPC.
        model_name: The served model's name.
        protocol: ``rest`` or ``grpc``.
        concurrency: Requests in flight at once.
        batch_size: Images per request (at most 32).
    """
    scored = batch_predict(
        source=source,
        url=url,
        model_name=model_name,
        protocol=protocol,
        concurrency=concurrency,
        batch_size=batch_size,
    )
    return scored.outputs["predictions"]
