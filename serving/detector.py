"""The KServe model: loads a registered model artifact and answers v1 and v2 inference requests.

Layers: ``serving.codec`` turns protocol payloads into image bytes and answers (``components.common.protocol``,
the contract) back into payloads; ``score`` works on domain types only; errors are domain errors translated to
KServe's at this edge (bad input -> 400).
Inference runs on the event loop's thread, the thread that warmed the model up: torch called from another
thread than the one that first ran it is 2-3x slower here.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from kserve import Model
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.infer_type import InferRequest, InferResponse

from components.common import protocol
from components.common.artifact import ArtifactConfig, fetch_artifact, load_artifact
from components.common.errors import InvalidImageError, InvalidRequestError
from components.common.images import decode_image
from components.common.model import Detector
from components.common.protocol import Answer
from components.common.provenance import Provenance, ProvenanceReader
from components.common.runtimes import Engine, image_outputs, open_engine, variant_name
from components.common.settings import ImageLimits, ProvenanceSettings, ServingSettings
from components.common.transforms import image_crops, load_image
from serving import codec, explain, metrics

log = structlog.get_logger(__name__)
# What a failed load raises (FileNotFoundError is an OSError): the server then stays up, not ready, and says why.
LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


class DetectorModel(Model):
    """An AI-generated product photo detector behind KServe's v1 and v2 protocols."""

    def __init__(
        self, settings: ServingSettings, limits: ImageLimits, provenance: ProvenanceSettings | None = None
    ) -> None:
        super().__init__(settings.model_name)
        self.settings, self.limits = settings, limits
        self.provenance = ProvenanceReader(provenance)
        self.net: Detector | None = None  # torch: explain (and inference with the torch runtime)
        # inference in the configured runtime/precision (not ``engine``: KServe's Model.engine flags a vLLM-style engine
        # to start, and a truthy one makes ModelServer.start schedule it)
        self.inference: Engine | None = None
        self.folder: Path | None = None  # the loaded artifact folder
        self.config: ArtifactConfig | None = None
        self.version = "unknown"

    def load(self) -> bool:
        """Fetch and load the artifact, then warm up; on any failure stay not ready (503) and log the cause."""
        started = time.perf_counter()
        try:
            folder = fetch_artifact(self.settings.model_uri, self.settings.download_dir / self.name)
            self.net, self.config = load_artifact(folder)
            self.folder = folder
            self.inference = self._open_engine(folder)
            self.version = self._version_of(folder)
            self.score([_warmup_image(self.config.model.preprocessing.image_size)])
        except LOAD_ERRORS as exc:
            self._load_failed(exc)
            return False
        self.ready = True
        log.info(
            "model_loaded",
            model_name=self.name,
            model_uri=self.settings.model_uri,
            model_version=self.version,
            variant=variant_name(self.settings.runtime, self.settings.precision),
            dataset_version=self.config.dataset_version,
            threshold=round(self.config.threshold, 4),
            load_seconds=round(time.perf_counter() - started, 2),
        )
        return True

    @property
    def loaded_config(self) -> ArtifactConfig:
        """The loaded artifact's configuration; ModelNotReady (a RuntimeError, KServe's 503) before a load."""
        if self.config is None:
            raise ModelNotReady(self.name, "No model artifact is loaded.")
        return self.config

    @property
    def loaded_engine(self) -> Engine:
        """The inference engine of the loaded artifact; ModelNotReady (KServe's 503) before a load."""
        if self.inference is None:
            raise ModelNotReady(self.name, "No inference engine is open.")
        return self.inference

    @property
    def loaded_net(self) -> Detector:
        """The loaded torch network (explanations); ModelNotReady (KServe's 503) before a load."""
        if self.net is None:
            raise ModelNotReady(self.name, "No model artifact is loaded.")
        return self.net

    def get_input_types(self) -> list[dict[str, Any]]:
        """v2 model metadata: what a request carries."""
        return [{"name": protocol.INPUT_NAME, "datatype": protocol.INPUT_DATATYPE, "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        """v2 model metadata: what a response carries, one element per image."""
        return [{"name": name, "datatype": datatype, "shape": [-1]} for name, datatype in protocol.OUTPUTS]

    def __getstate__(self) -> dict[str, Any]:
        """With ``--workers N`` KServe pickles the loaded model into each worker process: an inference engine
        cannot travel, so each worker opens its own (``__setstate__``)."""
        return {**self.__dict__, "inference": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """In a worker: open the engine of a model the parent loaded. A model that did not load stays not ready, and
        a worker that cannot open it logs why and answers not ready: a worker that raised here would die at start,
        and KServe would restart it forever with the port never answering."""
        self.__dict__.update(state)
        if self.ready and self.folder is not None:
            try:
                self.inference = self._open_engine(self.folder)
            except LOAD_ERRORS as exc:
                self._load_failed(exc)

    def _load_failed(self, exc: Exception) -> None:
        log.error("model_load_failed", model_uri=self.settings.model_uri, error=str(exc), error_type=type(exc).__name__)
        self.ready = False

    def _open_engine(self, folder: Path) -> Engine:
        """The configured runtime/precision, if this model version's evaluation enabled it (ValueError if not)."""
        config = self.loaded_config
        name = variant_name(self.settings.runtime, self.settings.precision)
        if name not in config.variants:
            raise ValueError(
                f"inference variant {name} is not enabled for this model version (enabled: "
                f"{', '.join(config.variants)}): its test AUC or accuracy moved too far from fp32's at evaluation"
            )
        threads = self.settings.threads or torch.get_num_threads()
        return open_engine(folder, self.settings.runtime, self.settings.precision, threads, self.net)

    def _version_of(self, folder: Path) -> str:
        """Registry version for models:/ URIs (alias resolved), else the folder's dataset version."""
        uri = self.settings.model_uri
        if uri.startswith("models:/"):
            import mlflow

            name, _, ref = uri.removeprefix("models:/").partition("@")
            client = mlflow.MlflowClient()
            if ref:
                return str(client.get_model_version_by_alias(name, ref).version)
            return uri.rsplit("/", 1)[-1]
        return f"{folder.name}-{self.loaded_config.dataset_version}"

    def score(self, images: list[bytes]) -> np.ndarray:
        """Calibrated probabilities that each image is AI-generated, from its native-resolution crops (the
        artifact's preprocessing). Raises InvalidImageError for an image it cannot take."""
        return self.score_all(images)[0]

    def score_all(self, images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """``score``'s probabilities and, from the same run, each image's generator probabilities (n_images, G),
        G = 0 for a model without an attribution head."""
        config = self.loaded_config
        prep = config.model.preprocessing
        crops = []
        for data in images:
            started = time.perf_counter()
            metrics.IMAGE_BYTES.observe(len(data))
            crops.append(image_crops(load_image(data, self.limits, prep), prep).numpy())
            metrics.PREPROCESS_SECONDS.observe(time.perf_counter() - started)
        engine = self.loaded_engine
        started = time.perf_counter()
        logits, generators = image_outputs(engine, crops)
        metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)
        return config.probabilities(logits), generators

    def read_provenance(self, data: bytes) -> Provenance:
        started = time.perf_counter()
        evidence = self.provenance.read(data)
        metrics.PROVENANCE_SECONDS.observe(time.perf_counter() - started)
        metrics.PROVENANCE.labels(c2pa=evidence.c2pa, ai_declared=str(evidence.ai_declared).lower()).inc()
        return evidence

    def detect(self, images: list[bytes]) -> list[Answer]:
        """The pixels' verdict on each image, overruled by a declaration of AI origin in the file itself (the
        probability stays the pixels'; a capture declaration never overrules them)."""
        config = self.loaded_config
        started = time.perf_counter()
        probabilities, generators = self.score_all(images)  # raises first for an image it cannot take
        evidence = [self.read_provenance(data) for data in images]
        elapsed_ms = (time.perf_counter() - started) * 1000 / len(images)
        answers = []
        for p, generator_probs, found in zip(map(float, probabilities), generators, evidence, strict=True):
            if found.ai_declared:
                label, confidence, source = config.labels[1], "high", protocol.PROVENANCE
            else:
                label, confidence, source = config.label(p), config.confidence(p), protocol.PIXELS
            metrics.PREDICTIONS.labels(label=label, model_version=self.version).inc()
            metrics.PROBABILITY.labels(model_version=self.version).observe(p)
            generator, generator_probability = config.model.attribute(generator_probs)
            answers.append(
                Answer(
                    probability=round(p, 6),
                    label=label,
                    confidence=confidence,
                    model_version=self.version,
                    inference_time_ms=round(elapsed_ms, 2),
                    generator=generator,
                    generator_probability=round(generator_probability, 6),
                    provenance=found,
                    verdict_source=source,
                    threshold=round(config.threshold, 6),
                )
            )
        return answers

    async def predict(
        self,
        payload: dict[str, Any] | InferRequest,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        request_id = (headers or {}).get("x-request-id") or getattr(payload, "id", None)
        structlog.contextvars.bind_contextvars(request_id=request_id, model_version=self.version)
        try:
            if isinstance(payload, InferRequest):
                answers = self.detect(codec.images_from_v2(payload, self.settings.max_batch))
                return codec.v2_response(payload, answers, self.name, self.version)
            return codec.v1_response(self.detect(codec.images_from_v1(payload, self.settings.max_batch)))
        except (InvalidImageError, InvalidRequestError) as exc:
            raise _bad_input(exc) from exc
        finally:
            structlog.contextvars.unbind_contextvars("request_id", "model_version")

    async def explain(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        """v1 ``:explain``: per image, the probability and a Grad-CAM heatmap PNG (base64) of the image's size."""
        net, config = self.loaded_net, self.loaded_config
        try:
            images = codec.images_from_v1(payload, self.settings.max_batch)
            explanations = []
            for data in images:
                image = decode_image(data, self.limits).image  # every pixel: the heatmap covers the full image
                probability, heat = explain.explain_image(net, config, image, data, self.limits)
                png = explain.heatmap_png(image, heat)
                explanations.append(
                    {"probability": round(probability, 6), "heatmap": {"b64": base64.b64encode(png).decode()}}
                )
        except (InvalidImageError, InvalidRequestError) as exc:
            raise _bad_input(exc) from exc
        return {"explanations": explanations, "model_version": self.version}


def _bad_input(exc: InvalidImageError | InvalidRequestError) -> InvalidInput:
    """The edge: a domain error about the request becomes KServe's 400, counted by reason and logged."""
    reason = exc.reason if isinstance(exc, InvalidImageError) else "bad_request"
    metrics.INVALID_REQUESTS.labels(reason=reason).inc()
    log.info("invalid_input", reason=reason, error=str(exc))
    return InvalidInput(str(exc))


def _warmup_image(size: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()
