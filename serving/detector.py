"""The KServe predictor: loads a registered model artifact and answers v1 and v2 inference requests.

Layers: ``serving.codec`` turns protocol payloads into image bytes and answers (``components.common.protocol``,
the contract) back into payloads; ``score`` works on domain types only; errors are domain errors translated to
KServe's at this edge (bad input -> 400).
No torch: the artifact's ONNX export runs in OpenVINO or ONNX Runtime (the torch runtime, for checks, imports torch
only when chosen). Explanations come from the explainer (``serving.explainer``, ``apd explain``), KServe's
``spec.explainer``; ``:explain`` sent here is forwarded to ``APD_SERVING__EXPLAINER_HOST`` when set.
Inference runs on the event loop's thread, the thread that warmed the model up (an engine called from another
thread than the one that first ran it was 2-3x slower here).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import structlog
from kserve import Model
from kserve.errors import InvalidInput, ModelNotReady
from kserve.protocol.infer_type import InferRequest, InferResponse

from components.common import protocol
from components.common.artifact import ArtifactConfig, fetch_artifact, load_artifact, read_config
from components.common.errors import InvalidImageError, InvalidRequestError
from components.common.protocol import Answer
from components.common.provenance import Provenance, ProvenanceReader
from components.common.runtimes import Engine, image_outputs, open_engine, variant_name
from components.common.settings import CacheSettings, ImageLimits, ProvenanceSettings, ServingSettings
from components.common.transforms import image_crops, load_image
from serving import codec, metrics
from serving.cache import ResultCache, cache_key

log = structlog.get_logger(__name__)
EXPLAIN_TIMEOUT_SECONDS = 120.0  # Grad-CAM of a batch of large photos on a busy explainer
FORWARDED_HEADERS = ("x-request-id", "authorization", "x-api-key")  # what the explainer sees of the request
# What a failed load raises (FileNotFoundError is an OSError): the server then stays up, not ready, and says why.
LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


class DetectorModel(Model):
    """An AI-generated product photo detector behind KServe's v1 and v2 protocols."""

    def __init__(
        self,
        settings: ServingSettings,
        limits: ImageLimits,
        provenance: ProvenanceSettings | None = None,
        cache: CacheSettings | None = None,
    ) -> None:
        super().__init__(settings.model_name)
        self.settings, self.limits = settings, limits
        self.provenance = ProvenanceReader(provenance)
        self.variant = variant_name(settings.runtime, settings.precision)
        self.cache = ResultCache(cache or CacheSettings())  # answers by image sha256, model version and variant
        # inference in the configured runtime/precision (not ``engine``: KServe's Model.engine flags a vLLM-style engine
        # to start, and a truthy one makes ModelServer.start schedule it)
        self.inference: Engine | None = None
        self._explainer: httpx.AsyncClient | None = None  # the explainer's HTTP client (explain), made on first use
        self.folder: Path | None = None  # the loaded artifact folder
        self.config: ArtifactConfig | None = None
        self.version = "unknown"

    def load(self) -> bool:
        """Fetch and load the artifact, then warm up; on any failure stay not ready (503) and log the cause."""
        started = time.perf_counter()
        try:
            folder, self.config, self.version = fetch_served(self.settings)
            self.folder = folder
            self.inference = self._open_engine(folder)
            self.cache.clear()  # answers of an artifact loaded before are not this one's
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

    def get_input_types(self) -> list[dict[str, Any]]:
        """v2 model metadata: what a request carries."""
        return [{"name": protocol.INPUT_NAME, "datatype": protocol.INPUT_DATATYPE, "shape": [-1]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        """v2 model metadata: what a response carries, one element per image."""
        return [{"name": name, "datatype": datatype, "shape": [-1]} for name, datatype in protocol.OUTPUTS]

    def __getstate__(self) -> dict[str, Any]:
        """With ``--workers N`` KServe pickles the loaded model into each worker process: an inference engine
        cannot travel, so each worker opens its own (``__setstate__``); nor can the explainer's HTTP client."""
        return {**self.__dict__, "inference": None, "_explainer": None}

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
        threads = self.settings.threads or len(os.sched_getaffinity(0))
        # the torch runtime (for checks, where torch is installed) runs the checkpoint itself
        net = load_artifact(folder)[0] if self.settings.runtime == "torch" else None
        return open_engine(folder, self.settings.runtime, self.settings.precision, threads, net)

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
            crops.append(image_crops(load_image(data, self.limits, prep), prep))
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
        return evidence

    def detect(self, images: list[bytes]) -> list[Answer]:
        """The answer for each image. One already answered (the same bytes, model version and variant) comes from the
        result cache, as it was computed, with ``cached`` set and the time this lookup took; the others are scored
        together (``score_answers``) and stored. Every image counts in the prediction metrics, cached or not."""
        for data in images:
            metrics.IMAGE_BYTES.observe(len(data))
        started = time.perf_counter()
        keys = [cache_key(data, self.version, self.variant) for data in images] if self.cache.enabled else []
        stored = [self.cache.get(key) for key in keys] if keys else [None] * len(images)
        lookup_ms = (time.perf_counter() - started) * 1000 / len(images)
        misses = [i for i, found in enumerate(stored) if found is None]
        scored = self.score_answers([images[i] for i in misses], lookup_ms) if misses else []  # raises for a bad image
        answers: list[Answer | None] = [
            None if found is None else replace(found, cached=True, inference_time_ms=round(lookup_ms, 2))
            for found in stored
        ]
        for i, fresh in zip(misses, scored, strict=True):
            answers[i] = fresh
            if keys:
                self.cache.put(keys[i], fresh)
        if keys:
            metrics.CACHE_LOOKUPS.labels(result="hit").inc(len(images) - len(misses))
            metrics.CACHE_LOOKUPS.labels(result="miss").inc(len(misses))
            metrics.CACHE_ENTRIES.set(len(self.cache))
        served = [answer for answer in answers if answer is not None]  # all of them: each was stored or scored
        for answer in served:
            self._count(answer)
        return served

    def score_answers(self, images: list[bytes], extra_ms: float = 0.0) -> list[Answer]:
        """The pixels' verdict on each image, overruled by a declaration of AI origin in the file itself (the
        probability stays the pixels'; a capture declaration never overrules them); ``inference_time_ms`` is each
        image's share of the time taken, plus ``extra_ms``."""
        config = self.loaded_config
        started = time.perf_counter()
        probabilities, generators = self.score_all(images)  # raises first for an image it cannot take
        evidence = [self.read_provenance(data) for data in images]
        elapsed_ms = (time.perf_counter() - started) * 1000 / len(images) + extra_ms
        answers = []
        for p, generator_probs, found in zip(map(float, probabilities), generators, evidence, strict=True):
            if found.ai_declared:
                label, confidence, source = config.labels[1], "high", protocol.PROVENANCE
            else:
                label, confidence, source = config.label(p), config.confidence(p), protocol.PIXELS
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
                    cached=False,
                )
            )
        return answers

    def _count(self, answer: Answer) -> None:
        """One image answered, scored or from the result cache: the metrics of what was served count it."""
        metrics.PREDICTIONS.labels(label=answer.label, model_version=self.version).inc()
        metrics.PROBABILITY.labels(model_version=self.version).observe(answer.probability or 0.0)  # set server side
        if answer.provenance is not None:
            evidence = answer.provenance
            metrics.PROVENANCE.labels(c2pa=evidence.c2pa, ai_declared=str(evidence.ai_declared).lower()).inc()

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
            raise bad_input(exc) from exc
        finally:
            structlog.contextvars.unbind_contextvars("request_id", "model_version")

    async def explain(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        """v1 ``:explain``, forwarded to the explainer at ``explainer_host``; its answer (or its 4xx, same status
        and message) comes back as it is. Without one, a 501 that says where explanations come from."""
        if not self.settings.explainer_host:
            raise NotImplementedError(
                "explanations come from the explainer (`apd explain`; on KServe the InferenceService's "
                "spec.explainer); set APD_SERVING__EXPLAINER_HOST=host:port to forward :explain to it"
            )
        url = f"http://{self.settings.explainer_host}/v1/models/{self.name}:explain"
        forwarded = {k: v for k, v in (headers or {}).items() if k.lower() in FORWARDED_HEADERS}
        try:
            if self._explainer is None:  # one client, its connections kept, built in the serving process
                self._explainer = httpx.AsyncClient(timeout=EXPLAIN_TIMEOUT_SECONDS)
            response = await self._explainer.post(url, json=payload, headers=forwarded)
        except httpx.HTTPError as exc:
            where = self.settings.explainer_host
            raise ModelNotReady(self.name, f"the explainer at {where} is not reachable: {exc}") from exc
        if response.status_code >= 400:
            message = protocol.error_message(response.text) or response.text or response.reason_phrase
            if response.status_code == 400:
                raise InvalidInput(str(message))
            raise ModelNotReady(self.name, f"the explainer answered {response.status_code}: {message}")
        answer: dict[str, Any] = response.json()
        return answer


def fetch_served(settings: ServingSettings) -> tuple[Path, ArtifactConfig, str]:
    """The artifact folder of ``settings.model_uri`` (downloaded first for registry URIs), its configuration and the
    version answers carry (``served_version``): what the predictor and the explainer both load from."""
    folder = fetch_artifact(settings.model_uri, settings.download_dir / settings.model_name)
    config = read_config(folder)
    return folder, config, served_version(settings.model_uri, folder, config.dataset_version)


def served_version(model_uri: str, folder: Path, dataset_version: str) -> str:
    """The version answers carry: the registry version for models:/ URIs (an alias resolved through MLflow), else
    the folder's name and dataset version."""
    if model_uri.startswith("models:/"):
        import mlflow

        name, _, ref = model_uri.removeprefix("models:/").partition("@")
        if ref:
            return str(mlflow.MlflowClient().get_model_version_by_alias(name, ref).version)
        return model_uri.rsplit("/", 1)[-1]
    return f"{folder.name}-{dataset_version}"


def bad_input(exc: InvalidImageError | InvalidRequestError) -> InvalidInput:
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
