"""Prometheus metrics of the detector, beyond KServe's own request histograms (same registry, same /metrics)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

PREDICTIONS = Counter(
    "apd_predictions_total",
    "Images answered, by predicted label and model version; an answer served from the result cache counts too.",
    ["label", "model_version"],
)
PROBABILITY = Histogram(
    "apd_probability",
    "Predicted probability that an image is AI-generated, of every image answered (result cache hits too).",
    ["model_version"],
    buckets=[i / 10 for i in range(1, 11)],
)
IMAGE_BYTES = Histogram(
    "apd_image_bytes",
    "Size of each received image, in bytes (result cache hits too).",
    buckets=[2**k for k in range(10, 25)],  # 1 KiB .. 16 MiB
)
INVALID_REQUESTS = Counter("apd_invalid_requests_total", "Requests rejected as invalid input, by reason.", ["reason"])
PREPROCESS_SECONDS = Histogram(
    "apd_preprocess_seconds",
    "Decode + preprocess time of one image (images scored, not those answered from the result cache).",
    buckets=[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
)
INFERENCE_SECONDS = Histogram(
    "apd_inference_seconds",
    "Network forward time of one batch.",
    buckets=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
)
PROVENANCE = Counter(
    "apd_provenance_images_total",
    "Images answered, by C2PA state (absent, valid, trusted, invalid, unreadable) and whether the file declares "
    "AI; result cache hits count too.",
    ["c2pa", "ai_declared"],
)
PROVENANCE_SECONDS = Histogram(
    "apd_provenance_seconds",
    "Time to read one image's provenance evidence (C2PA, XMP, EXIF, PNG text); not read for a result cache hit.",
    buckets=[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1],
)
CACHE_LOOKUPS = Counter(
    "apd_cache_lookups_total",
    "Result cache lookups, one per image of a predict request, by result (hit: answered from the cache, miss: "
    "scored); none while the cache is disabled.",
    ["result"],
)
for _result in ("hit", "miss"):  # both series from the start: rates and the hit ratio are defined before a first hit
    CACHE_LOOKUPS.labels(result=_result)
CACHE_ENTRIES = Gauge("apd_cache_entries", "Answers held in the result cache (of this worker process).")

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

# API keys (serving/auth.py): one count per request to an endpoint that needs a key, by outcome (ok, missing,
# invalid, rate_limited); never the key, nor its name. The model server's in its /metrics; the web page's (its own
# process) in the page's own registry, served on the page's /metrics.
AUTH_REQUESTS = Counter(
    "apd_auth_requests_total",
    "Requests to endpoints that need an API key, by outcome: ok, missing (401), invalid (403), rate_limited (429).",
    ["outcome"],
)
UI_REGISTRY = CollectorRegistry(auto_describe=True)
UI_AUTH_REQUESTS = Counter(
    "apd_auth_requests_total",
    "Requests to the web page's /api, by API-key outcome: ok, missing (401), invalid (403), rate_limited (429).",
    ["outcome"],
    registry=UI_REGISTRY,
)
