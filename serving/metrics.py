"""Prometheus metrics of the detector, beyond KServe's own request histograms (same registry, same /metrics)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

PREDICTIONS = Counter(
    "apd_predictions_total", "Images scored, by predicted label and model version.", ["label", "model_version"]
)
PROBABILITY = Histogram(
    "apd_probability",
    "Predicted probability that an image is AI-generated.",
    ["model_version"],
    buckets=[i / 10 for i in range(1, 11)],
)
IMAGE_BYTES = Histogram(
    "apd_image_bytes",
    "Size of each received image, in bytes.",
    buckets=[2**k for k in range(10, 25)],  # 1 KiB .. 16 MiB
)
INVALID_REQUESTS = Counter("apd_invalid_requests_total", "Requests rejected as invalid input, by reason.", ["reason"])
PREPROCESS_SECONDS = Histogram(
    "apd_preprocess_seconds",
    "Decode + preprocess time of one image.",
    buckets=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
)
INFERENCE_SECONDS = Histogram(
    "apd_inference_seconds",
    "Network forward time of one batch.",
    buckets=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
)
PROVENANCE = Counter(
    "apd_provenance_images_total",
    "Images scored, by C2PA state (absent, valid, trusted, invalid, unreadable) and whether the file declares AI.",
    ["c2pa", "ai_declared"],
)
PROVENANCE_SECONDS = Histogram(
    "apd_provenance_seconds",
    "Time to read one image's provenance evidence (C2PA, XMP, EXIF, PNG text).",
    buckets=[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
)

# The payload sink (`apd sink`) is its own process: its metrics live in their own registry (plus the process's CPU
# and memory), so the model server's /metrics does not show them and the sink's shows nothing else.
SINK_REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=SINK_REGISTRY)
PlatformCollector(registry=SINK_REGISTRY)
SINK_EVENTS = Counter(
    "apd_sink_events_total", "CloudEvents accepted (in the write-ahead log), by type.", ["type"], registry=SINK_REGISTRY
)
SINK_REJECTED = Counter(
    "apd_sink_rejected_total", "Events answered 4xx/5xx and not stored, by reason.", ["reason"], registry=SINK_REGISTRY
)
SINK_DUPLICATES = Counter(
    "apd_sink_duplicates_total",
    "Events received again (same ce-id and type) and not stored twice.",
    registry=SINK_REGISTRY,
)
SINK_UNPAIRED = Counter(
    "apd_sink_unpaired_total",
    "Requests or responses written without their other half (timeout).",
    registry=SINK_REGISTRY,
)
SINK_RECORDS = Counter(
    "apd_sink_records_written_total", "Records (one per image) written to S3.", registry=SINK_REGISTRY
)
SINK_S3_ERRORS = Counter("apd_sink_s3_errors_total", "Failed S3 uploads (each is retried).", registry=SINK_REGISTRY)
SINK_WAL_EVENTS = Gauge(
    "apd_sink_wal_events",
    "Events accepted and not yet written to S3 (held in the write-ahead log).",
    registry=SINK_REGISTRY,
)
SINK_FLUSH_SECONDS = Histogram(
    "apd_sink_flush_seconds",
    "Time to write one Parquet file to S3, retries included.",
    buckets=[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
    registry=SINK_REGISTRY,
)
