"""One Settings object per process, read from the environment (prefix ``APD_``, nested with ``__``).

Build it once at the entrypoint (``Settings()``) and pass it, or the section a function needs, down.
Example: ``APD_IMAGES__MAX_BYTES=5000000 apd ingest ...``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ImageLimits(BaseModel):
    """What an uploaded or ingested image may be. Shared by ingest, validate and serving."""

    formats: tuple[str, ...] = Field(
        default=("JPEG", "PNG", "WEBP"), description="Accepted image formats, as Pillow names them."
    )
    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="Largest accepted encoded image, in bytes.")
    max_pixels: int = Field(
        default=40_000_000, gt=0, description="Largest accepted width x height: a guard against decompression bombs."
    )
    min_side: int = Field(default=32, gt=0, description="Smallest accepted width or height, in pixels.")


class SplitSettings(BaseModel):
    """How ingest assigns images to splits (deterministic from the content hash)."""

    train: float = Field(default=0.70, gt=0, lt=1, description="Fraction of images in the training split.")
    val: float = Field(default=0.15, gt=0, lt=1, description="Fraction of images in the validation split.")
    test: float = Field(default=0.15, gt=0, lt=1, description="Fraction of images in the held-out test split.")

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitSettings:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must add up to 1, got {total:.4f}")
        return self


class ValidationRules(BaseModel):
    """Rules that the validate stage checks; a failed rule blocks the pipeline."""

    max_class_ratio: float = Field(
        default=1.5, ge=1, description="Largest allowed majority/minority class count ratio, overall and per split."
    )
    warn_class_ratio: float = Field(
        default=1.25, ge=1, description="Class ratio above which validate warns without blocking."
    )
    min_images_per_split: int = Field(default=10, ge=1, description="Fewest images each split must hold.")


class MlflowSettings(BaseModel):
    """Experiment tracking and the model registry."""

    tracking_uri: str = Field(
        default="sqlite:///data/mlflow/mlflow.db",
        description="MLflow tracking URI: SQLite file locally, http://mlflow:5000 on a cluster.",
    )
    artifact_root: str = Field(
        default="data/mlflow/artifacts",
        description="Artifact location of new experiments: a local folder, or s3://bucket/path on MinIO.",
    )
    experiment: str = Field(default="apd-training", description="Experiment that training runs are logged to.")
    model_name: str = Field(default="apd-detector", description="Registered model name in the Model Registry.")


class QualityGate(BaseModel):
    """The bars a model must pass on the test split before it is registered."""

    min_accuracy: float = Field(default=0.85, ge=0, le=1, description="Lowest accepted test accuracy.")
    min_f1: float = Field(default=0.80, ge=0, le=1, description="Lowest accepted test F1 (ai_generated positive).")
    max_auc_drop: float = Field(
        default=0.10,
        ge=0,
        le=1,
        description="Largest test ROC AUC the model may lose on JPEG q75 or 0.5x-downscaled copies of the test images.",
    )
    max_fpr: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="The operating point the gate is measured at: the threshold flags at most this share of the "
        "validation split's real images (the F1-best cut among those).",
    )


class S3Settings(BaseModel):
    """Connection to an S3-compatible object store (MinIO on a cluster). Credentials only from the environment."""

    endpoint: str = Field(default="127.0.0.1:9000", description="host:port of the S3 endpoint, without scheme.")
    access_key: str | None = Field(default=None, description="Access key id; unset for anonymous access.")
    secret_key: str | None = Field(default=None, description="Secret access key; unset for anonymous access.")
    secure: bool = Field(default=False, description="Use HTTPS to reach the endpoint.")
    region: str | None = Field(default=None, description="Bucket region, when the store needs one.")

    def client(self, http_client: Any = None) -> Any:
        """A minio client for this store; ``http_client`` (a urllib3 PoolManager) sets timeouts and retries."""
        from minio import Minio

        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=self.secure,
            region=self.region,
            http_client=http_client,
        )


class ServingSettings(BaseModel):
    """The KServe model server."""

    model_name: str = Field(default="apd-detector", description="Name the model is served under (URL path).")
    model_uri: str = Field(
        default="models:/apd-detector@champion",
        description="Model to serve: models:/<name>@<alias>, models:/<name>/<version>, or a folder (/mnt/models).",
    )
    max_batch: int = Field(default=32, ge=1, description="Most images accepted in one request.")
    runtime: Literal["openvino", "onnxruntime", "torch"] = Field(
        default="openvino",
        description="Inference runtime: OpenVINO or ONNX Runtime on the artifact's ONNX export, or torch (checks "
        "only: not in the predictor image).",
    )
    precision: Literal["fp32", "bf16", "int8"] = Field(
        default="fp32",
        description="Inference precision: bf16 (OpenVINO) and int8 load only when the model's evaluation enabled "
        "them (test AUC and accuracy within 0.002 and 0.5 points of fp32); otherwise the model stays not ready.",
    )
    threads: int = Field(
        default=0, ge=0, description="Inference threads per worker; 0: the cores this process may run on."
    )
    download_dir: Path = Field(
        default=Path("data/serving"), description="Where registry models are downloaded before loading."
    )
    explainer_host: str = Field(
        default="",
        description="host:port of the explainer (`apd explain`) that `:explain` requests are forwarded to; empty: "
        "`:explain` answers 501 (on KServe the InferenceService routes `:explain` to spec.explainer itself).",
    )


class CacheSettings(BaseModel):
    """The model server's result cache: the answer for the same image bytes under the same model version and
    inference variant is served again without decoding. One cache per worker process, in memory."""

    enabled: bool = Field(
        default=True, description="Serve repeated images (same sha256) from the cache; false: score every image."
    )
    max_entries: int = Field(
        default=10_000, ge=1, description="Most answers kept (under 1 KB each); the least recently used goes first."
    )
    ttl_seconds: float = Field(
        default=3600.0, gt=0, description="Seconds an answer is served from the cache after it was computed."
    )


class SinkSettings(BaseModel):
    """The payload sink (``apd sink``): KServe logger CloudEvents -> write-ahead log -> Parquet records on S3."""

    bucket: str = Field(default="apd-payloads", description="Bucket of the records (created when missing).")
    prefix: str = Field(
        default="records",
        description="Key prefix of the records: <prefix>/date=YYYY-MM-DD/model=<name>/version=<v>/part-<uuid>.parquet.",
    )
    images_prefix: str = Field(
        default="images", description="Key prefix of the raw images when keep_images is on: <prefix>/<sha256>.<ext>."
    )
    keep_images: bool = Field(default=False, description="Also store each received image, keyed by its sha256.")
    wal_dir: Path = Field(
        default=Path("data/sink-wal"),
        description="Write-ahead log folder: every accepted event is fsynced here before the sink answers, and stays "
        "until its records are on S3; replayed on start. Put it on a persistent volume.",
    )
    flush_records: int = Field(
        default=2000, ge=1, description="Records per Parquet file: a partition is written at this."
    )
    flush_seconds: float = Field(
        default=5.0, gt=0, description="A partition's records are written at the latest this long after the first."
    )
    pair_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a request waits for its response (and back) before it is written "
        "alone, with paired=false.",
    )
    max_retries: int = Field(
        default=5,
        ge=1,
        description="Upload attempts of one Parquet file before it is set aside and tried again "
        "after backoff_max_seconds; nothing is dropped, its events stay in the write-ahead log.",
    )
    backoff_seconds: float = Field(
        default=0.5, gt=0, description="Wait before the first upload retry; doubles each time."
    )
    backoff_max_seconds: float = Field(default=30.0, gt=0, description="Longest wait between upload retries.")
    workers: int = Field(
        default=2,
        ge=0,
        description="Processes that decode images and compute their features (niced, so accepting "
        "events comes first); 0: one thread of the sink process.",
    )
    dedup_ids: int = Field(
        default=500_000,
        ge=1000,
        description="Written events remembered (ce-id and type, kept in the write-ahead log "
        "folder across restarts) to drop a resent event; events still in the log are always remembered.",
    )
    max_event_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Largest accepted event body, in bytes (413 above)."
    )


class DeploySettings(BaseModel):
    """Rolling a registered model version out to the KServe InferenceService (``apd rollout``, the deploy step)."""

    isvc_name: str = Field(default="apd-detector", description="Name of the InferenceService that rollouts patch.")
    namespace: str | None = Field(
        default=None,
        description="Namespace of the InferenceService; unset: the pod's own namespace in a cluster, else the "
        "current kubeconfig context's, else 'default'.",
    )
    canary_percent: int = Field(
        default=10, ge=0, le=100, description="Share of requests (percent) a new canary gets when none is given."
    )
    default_mode: Literal["Serverless", "Standard"] = Field(
        default="Serverless",
        description="KServe deployment mode assumed when the InferenceService names none (annotation "
        "serving.kserve.io/deploymentMode or status.deploymentMode): the cluster's default, Serverless in KServe's.",
    )


class TrainingJobSettings(BaseModel):
    """Distributed training (pipeline parameter ``train_nodes`` > 1): the Kubeflow TrainJob, or the Training Operator's
    PyTorchJob, that the train step creates, follows and waits for (``components.trainjob``)."""

    kind: Literal["auto", "trainjob", "pytorchjob"] = Field(
        default="auto",
        description="auto: a TrainJob where the API server serves trainer.kubeflow.org/v1alpha1 trainjobs (Kubeflow "
        "Trainer), else a PyTorchJob where it serves kubeflow.org/v1 pytorchjobs (Training Operator).",
    )
    runtime: str = Field(
        default="torch-distributed", description="ClusterTrainingRuntime a TrainJob runs on (Trainer's torchrun one)."
    )
    image: str | None = Field(
        default=None, description="Image of the training pods; unset: the component image the pipeline steps run in."
    )
    namespace: str | None = Field(
        default=None,
        description="Namespace of the jobs; unset: the step pod's own namespace in a cluster, else the current "
        "kubeconfig context's, else 'default'.",
    )
    service_account: str | None = Field(
        default=None,
        description="Service account of the training pods; unset: the namespace's default (they need no API access).",
    )
    cpu: str = Field(default="4", description="CPU request and limit of each node's pod.")
    memory: str = Field(default="16G", description="Memory request and limit of each node's pod.")
    gpus: int | None = Field(
        default=None, ge=0, description="GPUs of each node's pod; unset: one per process of the node; 0: CPU only."
    )
    accelerator: str = Field(default="nvidia.com/gpu", description="Kubernetes resource name of the GPUs.")
    s3_secret: str | None = Field(
        default=None,
        description="Secret in the jobs' namespace with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (the chart's "
        "<fullname>-s3 or s3.existingSecret) that the pods take the S3 credentials from (secretKeyRef); unset: the "
        "pods get none, and a step whose environment holds credentials refuses to write them into the job.",
    )
    poll_seconds: float = Field(default=5.0, gt=0, description="Seconds between two reads of the job's status.")
    timeout_seconds: float = Field(
        default=43200.0,
        gt=0,
        description="Longest a job may run (also its activeDeadlineSeconds); past it the step deletes it and fails.",
    )


class DriftSettings(BaseModel):
    """The drift job (``apd drift run``, the KFP ``drift`` step): live records of the sink against the served model
    version's reference statistics. An alert fires when any one threshold is passed."""

    window_hours: float = Field(default=24.0, gt=0, description="Records of the last this many hours are compared.")
    min_records: int = Field(
        default=200, ge=1, description="Fewest usable records in the window for a verdict; fewer: no verdict."
    )
    drift_share_threshold: float = Field(
        default=0.5, gt=0, le=1, description="Alert when at least this share of the feature columns drifted."
    )
    confidence_drop_threshold: float = Field(
        default=0.15,
        ge=0,
        description="Alert when the mean margin to the threshold falls by more than this fraction of the reference's.",
    )
    probability_shift_threshold: float = Field(
        default=0.1, gt=0, le=1, description="Alert when |current - reference mean probability| reaches this."
    )
    alert_on_probability_drift: bool = Field(
        default=True, description="Alert when the distribution of the predicted probability drifted."
    )
    num_method: str | None = Field(
        default=None,
        description="Evidently stat test for numeric features (e.g. ks, wasserstein, psi); unset: Evidently's choice "
        "(K-S p-value up to 1000 reference rows, normed Wasserstein distance above).",
    )
    cat_method: str | None = Field(
        default=None,
        description="Evidently stat test for the image format; unset: Evidently's choice (chi-square p-value up to "
        "1000 reference rows, Jensen-Shannon distance above).",
    )
    stattest_threshold: float | None = Field(
        default=None, gt=0, description="Threshold of the feature stat tests; unset: each test's default."
    )
    probability_method: str | None = Field(
        default=None, description="Evidently stat test for the probability; unset: chosen like the numeric features."
    )
    probability_threshold: float | None = Field(
        default=None, gt=0, description="Threshold of the probability stat test; unset: the test's default."
    )
    pushgateway_url: str | None = Field(
        default=None, description="Prometheus Pushgateway that receives the gauges, e.g. http://pushgateway:9091."
    )
    report_bucket: str | None = Field(
        default=None, description="Bucket of the reports (drift/<model>/<version>/<endpoint>/...); unset: the sink's."
    )
    experiment: str = Field(default="apd-drift", description="MLflow experiment that drift runs are logged to.")


class UiSettings(BaseModel):
    """The moderators' web page (``apd ui``): a static page and a thin proxy to the served model's KServe API."""

    model_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Base URL of the model server (KServe v1/v2 REST), e.g. http://apd-detector-predictor.apd.svc.",
    )
    model_name: str = Field(default="apd-detector", description="Model the page scores with (/v2/models/<name>).")
    compare_url: str | None = Field(
        default=None,
        description="Second model server (a canary or another model version) that scores the same image for the "
        "compare view; unset: the compare view uses model_url when compare_model_name is set, else it is off.",
    )
    compare_model_name: str | None = Field(
        default=None, description="Model name on the compare server; unset: model_name."
    )
    timeout: float = Field(
        default=60.0, gt=0, description="Seconds the page's backend waits for the model server (Grad-CAM is slow)."
    )


class AuthSettings(BaseModel):
    """Who may call the model server (``apd serve``) and the web page (``apd ui``): API keys, kept only as SHA-256
    hashes, and a rate limit per key (serving/README.md, "Who may call")."""

    enabled: bool = Field(
        default=False,
        description="Require an API key (X-API-Key: <key>, or Authorization: Bearer <key>) on every endpoint but "
        "liveness, readiness and /metrics: 401 without one, 403 with a wrong or revoked one, 429 over the rate.",
    )
    keys_file: Path | None = Field(
        default=None,
        description="File of the accepted keys, one NAME:SHA256HEX per line (# comments; `apd auth hash-key "
        "--name NAME` writes a line), on a cluster a mounted Secret. Re-read when it changes: a removed line is "
        "a revoked key. Required when enabled.",
    )
    reload_seconds: float = Field(
        default=5.0, gt=0, description="How often the keys file is checked for changes (its mtime, size and inode)."
    )
    rate_per_second: float = Field(
        default=20.0,
        ge=0,
        description="Requests per second each key may make, per server process (a token bucket per key name); "
        "0: no limit.",
    )
    burst: int = Field(default=40, ge=1, description="Requests a key may make at once above its rate (bucket size).")

    @model_validator(mode="after")
    def _keys_file_when_enabled(self) -> AuthSettings:
        if self.enabled and self.keys_file is None:
            raise ValueError("APD_AUTH__ENABLED=true needs APD_AUTH__KEYS_FILE, the file of NAME:SHA256HEX lines")
        return self


class ProvenanceSettings(BaseModel):
    """Provenance evidence (C2PA Content Credentials, IPTC XMP, generator metadata) read from every served image."""

    trust_anchors: Path | None = Field(
        default=None,
        description="PEM file of the CA certificates whose C2PA signatures count as trusted (e.g. the C2PA trust "
        "list); unset: none, and a manifest that validates reads as valid, not trusted. Read offline, once.",
    )
    max_text_bytes: int = Field(
        default=2 * 1024 * 1024,
        gt=0,
        description="Largest metadata block read (a PNG text chunk, inflated too, an XMP packet or EXIF): a larger "
        "one is reported unreadable, never parsed.",
    )


class LoggingSettings(BaseModel):
    """Structured logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Lowest level logged.")
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="json in containers, console on a terminal; auto picks by whether stderr is a TTY."
    )


class Settings(BaseSettings):
    """Every knob of the platform. Environment variables: ``APD_<FIELD>`` or ``APD_<SECTION>__<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="APD_", env_nested_delimiter="__", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="Where datasets and the ingest cache live locally.")
    git_commit: str = Field(
        default="", description="Commit of the code, set in images at build time; locally read from git when empty."
    )
    seed: int = Field(default=42, description="Seed for everything random (augmentation, shuffling, demo crops).")
    images: ImageLimits = Field(default_factory=ImageLimits, description="Image format and size limits.")
    splits: SplitSettings = Field(default_factory=SplitSettings, description="Train/val/test fractions.")
    validation: ValidationRules = Field(default_factory=ValidationRules, description="Dataset validation rules.")
    s3: S3Settings = Field(default_factory=S3Settings, description="S3 / MinIO connection.")
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings, description="MLflow tracking and registry.")
    gate: QualityGate = Field(default_factory=QualityGate, description="Quality gate of the evaluate stage.")
    serving: ServingSettings = Field(default_factory=ServingSettings, description="Model server.")
    cache: CacheSettings = Field(default_factory=CacheSettings, description="The model server's result cache.")
    sink: SinkSettings = Field(default_factory=SinkSettings, description="Payload sink (KServe logger events).")
    deploy: DeploySettings = Field(default_factory=DeploySettings, description="Model rollouts to KServe.")
    drift: DriftSettings = Field(default_factory=DriftSettings, description="The drift job and its alert thresholds.")
    trainjob: TrainingJobSettings = Field(
        default_factory=TrainingJobSettings, description="Distributed training jobs on Kubeflow Trainer."
    )
    ui: UiSettings = Field(default_factory=UiSettings, description="The moderators' web page (apd ui).")
    auth: AuthSettings = Field(
        default_factory=AuthSettings, description="API keys and rate limits of the model server and the page."
    )
    provenance: ProvenanceSettings = Field(
        default_factory=ProvenanceSettings, description="What image files declare about their origin."
    )
    logging: LoggingSettings = Field(default_factory=LoggingSettings, description="Logging setup.")


def _shown(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple | list):
        return json.dumps(list(value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if value != "" else '""'


def reference() -> str:
    """Every setting as a Markdown table (variable, default, meaning), from the fields' descriptions: the
    configuration reference, written by ``python -m components.common.settings`` (a test checks it is current)."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `components/common/settings.py` by `make config-reference`; do not edit by hand. Every",
        "setting is an environment variable `APD_<FIELD>` or `APD_<SECTION>__<FIELD>`; lists and objects as JSON.",
    ]
    sections: list[tuple[str, str, type[BaseModel]]] = []
    top = ["", "## General", "", "| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            sections.append((name, field.description or "", field.annotation))
        else:
            top.append(f"| `APD_{name.upper()}` | `{_shown(field.default)}` | {field.description} |")
    lines += top
    for name, description, model in sections:
        lines += ["", f"## {name}: {description}", "", "| variable | default | meaning |", "| --- | --- | --- |"]
        for field_name, field in model.model_fields.items():
            default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
            variable = f"APD_{name.upper()}__{field_name.upper()}"
            lines.append(f"| `{variable}` | `{_shown(default)}` | {field.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
