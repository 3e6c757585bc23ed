"""Batch prediction, a client of the model server: score a catalogue of images with the SERVED model over KServe's
v2 protocol.

Sources (``apd predict SOURCE...``; the KFP component ``batch_predict`` takes one S3 prefix):
- image files, and folders (recursive; hidden files and folders are left out);
- ``.zip`` archives (each member a row, named ``archive.zip!member``);
- ``s3://bucket/prefix`` (every object below the prefix; endpoint and keys from ``APD_S3__*``);
- ``.txt`` files of ``http(s)://`` image URLs, one per line (blank lines and ``#`` comments are skipped), and
  http(s) URLs given directly.

Every image is one output row (CSV, JSON Lines or Parquet): ``source, sha256, probability, label, confidence,
model_version, ai_declared, c2pa, provenance_generator, verdict_source, error`` (the provenance columns are what the
file declares about its origin, as the server read it; ``label`` is ``ai_generated`` when ``ai_declared``). A bad
image (rejected by the server with a 400, over the byte limit, a failed fetch) is a row with ``error`` set; it never
stops the run. Requests carry ``batch_size`` images (raw bytes: the v2 REST binary-data extension or gRPC),
``concurrency`` of them in flight; a batch the server rejects is re-sent one image per request, so only the bad image
gets the error. Connection errors, 5xx and 503 (not ready) are retried with backoff; when the server stays
unavailable the run stops (exit 1) and keeps what it wrote.

Resumable: a re-run with the same output skips every source that already has a row (``retry_errors`` drops the
error rows first, so those sources are scored again). CSV and JSON Lines are appended after each batch. Parquet
cannot be appended: rows go to part files in ``<out>.parts/`` while the run goes on, and at the end the existing
file and the parts are rewritten into ``<out>`` (atomically) and the parts removed; an interrupted run leaves its
parts, which the next run reads as done and merges.

Modules: ``sources`` (the images to score), ``writers`` (the rows, resumable), ``client`` (the served model over
v2 and what its failures mean), ``failures`` (what stops a run, what is retried), ``runner`` (the concurrent run,
``run_predict``). The contract with the server is ``components.common.protocol``; the KFP step is
``components.predict.batch_predict``.
"""

from components.batch.client import ServingUnavailableError
from components.batch.failures import PredictError, Retry
from components.batch.runner import PredictJob, PredictOptions, Summary, predict_batch, run_predict
from components.batch.writers import read_rows

__all__ = [
    "PredictError",
    "PredictJob",
    "PredictOptions",
    "Retry",
    "ServingUnavailableError",
    "Summary",
    "predict_batch",
    "read_rows",
    "run_predict",
]
