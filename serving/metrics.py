"""Prometheus metrics of the detector, beyond KServe's own request histograms (same registry, same /metrics)."""

from prometheus_client import Counter, Histogram

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
