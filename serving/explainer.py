"""The explainer: KServe's explainer component for the detector, ``apd explain`` (the apd-explainer image, torch).

It answers v1 ``:explain`` with, per image, the probability and a Grad-CAM heatmap PNG (base64) of the image's size
(``serving.explain``). On KServe it runs as the InferenceService's ``spec.explainer``: KServe routes ``:explain``
to it and ``:predict`` to the predictor, each with its own resources and scaling. Locally it runs beside
``apd serve``, which forwards ``:explain`` to it when ``APD_SERVING__EXPLAINER_HOST`` names it:

    apd explain --model_uri /mnt/models --http_port 8082 --grpc_port 8083
    APD_SERVING__EXPLAINER_HOST=127.0.0.1:8082 apd serve --model_uri /mnt/models

It takes KServe's ModelServer flags as ``apd serve`` does (KServe passes ``--model_name`` and ``--predictor_host``
to explainer containers; the explainer computes its answers itself and needs no predictor).
"""

from __future__ import annotations

import argparse
import base64
import time
from typing import Any

import structlog
from kserve import Model, ModelServer, model_server
from kserve.errors import ModelNotReady

from components.common.artifact import ArtifactConfig, load_artifact
from components.common.errors import InvalidImageError, InvalidRequestError
from components.common.images import decode_image
from components.common.logging import configure_logging
from components.common.model import Detector
from components.common.settings import ImageLimits, ServingSettings, Settings
from components.common.tracking import setup_tracking
from serving import codec, explain
from serving.dataplane import BinaryBytesDataPlane
from serving.detector import LOAD_ERRORS, bad_input, fetch_served

log = structlog.get_logger(__name__)


class ExplainerModel(Model):
    """Grad-CAM explanations of the detector's answers, from the artifact's torch weights."""

    def __init__(self, settings: ServingSettings, limits: ImageLimits) -> None:
        super().__init__(settings.model_name)
        self.settings, self.limits = settings, limits
        self.net: Detector | None = None
        self.config: ArtifactConfig | None = None
        self.version = "unknown"

    def load(self) -> bool:
        """Fetch and load the artifact's torch network; on failure stay not ready (503) and log the cause."""
        started = time.perf_counter()
        try:
            folder, self.config, self.version = fetch_served(self.settings)
            self.net = load_artifact(folder)[0]
        except LOAD_ERRORS as exc:
            log.error("explainer_load_failed", model_uri=self.settings.model_uri, error=str(exc))
            self.ready = False
            return False
        self.ready = True
        log.info("explainer_loaded", model_name=self.name, load_seconds=round(time.perf_counter() - started, 2))
        return True

    async def explain(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        """v1 ``:explain``: per image, the probability and a Grad-CAM heatmap PNG (base64) of the image's size."""
        if self.net is None or self.config is None:
            raise ModelNotReady(self.name, "No model artifact is loaded.")
        try:
            images = codec.images_from_v1(payload, self.settings.max_batch)
            explanations = []
            for data in images:
                image = decode_image(data, self.limits).image  # every pixel: the heatmap covers the full image
                probability, heat = explain.explain_image(self.net, self.config, image, data, self.limits)
                png = explain.heatmap_png(image, heat)
                explanations.append(
                    {"probability": round(probability, 6), "heatmap": {"b64": base64.b64encode(png).decode()}}
                )
        except (InvalidImageError, InvalidRequestError) as exc:
            raise bad_input(exc) from exc
        return {"explanations": explanations, "model_version": self.version}


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="apd explain", parents=[model_server.parser], description=__doc__)
    parser.set_defaults(model_name=settings.serving.model_name)
    parser.add_argument("--model_uri", default=settings.serving.model_uri, help="models:/... URI or a folder")
    args = parser.parse_args(argv)
    configure_logging(settings.logging)
    serving = settings.serving.model_copy(update={"model_name": args.model_name, "model_uri": args.model_uri})
    if serving.model_uri.startswith(("models:/", "runs:/")):
        setup_tracking(settings.mlflow)
    model = ExplainerModel(serving, settings.images)
    model.load()
    server = ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, enable_grpc=False)
    # the predictor's REST data plane, with its API-key check when APD_AUTH__ENABLED (KServe routes :explain here)
    server.dataplane = BinaryBytesDataPlane(model_registry=server.registered_models, auth=settings.auth)
    if model.ready:
        server.start([model])
    else:  # health endpoints that say "not ready" rather than exit: the cause is in the log above
        server.register_model(model)
        server.start([])
    return 0
