"""The batch pipeline's scoring step: every image below an S3 prefix, scored by the served model, into Parquet.

Batch prediction itself (sources, resumable writers, the v2 client with retries, the concurrent run) lives in
``components.batch``, which ``apd predict`` uses too.
"""

from kfp.dsl import Dataset, Output

from components.stage import stage


@stage
def batch_predict(
    source: str,
    url: str,
    predictions: Output[Dataset],
    model_name: str = "apd-detector",
    protocol: str = "rest",
    concurrency: int = 8,
    batch_size: int = 8,
) -> str:
    """Score every image below an S3 prefix with the served detector (KServe v2), one Parquet row per image.

    Args:
        source: ``s3://bucket/prefix`` of the images (endpoint and credentials from ``APD_S3__*``).
        url: The model server: ``http://host[:port]`` (v2 REST) or ``host:port`` (v2 gRPC).
        predictions: Parquet with ``source, sha256, probability, label, confidence, model_version, ai_declared,
            c2pa, provenance_generator, verdict_source, error``.
        model_name: The served model's name.
        protocol: ``rest`` (v2 REST, binary-data extension) or ``grpc`` (v2 gRPC).
        concurrency: Requests in flight at once.
        batch_size: Images per request (at most 32).

    Returns:
        The run's summary (scored, errors, images/s, model version).
    """
    from pathlib import Path

    from components.batch import PredictJob, PredictOptions, run_predict
    from components.common.logging import configure_logging
    from components.common.settings import Settings

    settings = Settings()
    configure_logging(settings.logging)
    options = PredictOptions(
        batch_size=batch_size, concurrency=concurrency, max_image_bytes=settings.images.max_bytes, progress=False
    )
    job = PredictJob(
        sources=[source],
        out=Path(predictions.path),
        url=url,
        model=model_name,
        protocol=protocol,
        options=options,
        s3=settings.s3,
        fmt="parquet",
    )
    summary = run_predict(job)
    if summary.stopped:
        raise RuntimeError(f"batch scoring stopped early: {summary.stopped}")
    predictions.metadata.update(
        {
            "format": "parquet",
            "source": source,
            "rows": summary.scored + summary.errors,
            "scored": summary.scored,
            "errors": summary.errors,
            "model_versions": sorted(summary.model_versions),
            "images_per_second": round(summary.images_per_second, 1),
        }
    )
    return summary.text()
