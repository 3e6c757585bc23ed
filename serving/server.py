"""``apd serve``: KServe's ModelServer with the detector, taking KServe's own flags.

    apd serve --model_uri models:/apd-detector@champion --http_port 8080 --grpc_port 8081

Every ModelServer flag (``--http_port``, ``--grpc_port``, ``--workers``, ...) works as in any KServe container;
``--model_name`` and ``--model_uri`` default to ``APD_SERVING__MODEL_NAME`` / ``APD_SERVING__MODEL_URI``.
A model that fails to load is still registered, not ready: the server answers 503 and the log says why.
"""

import argparse

import kserve
from kserve import model_server

from components.common.logging import configure_logging
from components.common.settings import Settings
from components.common.tracking import setup_tracking
from serving.dataplane import BinaryBytesDataPlane
from serving.detector import DetectorModel


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apd serve", parents=[model_server.parser], description=__doc__)
    parser.set_defaults(model_name=settings.serving.model_name)  # KServe's own --model_name flag
    parser.add_argument("--model_uri", default=settings.serving.model_uri, help="models:/... URI or a folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    args = build_parser(settings).parse_args(argv)
    configure_logging(settings.logging)
    serving = settings.serving.model_copy(update={"model_name": args.model_name, "model_uri": args.model_uri})
    if serving.model_uri.startswith(("models:/", "runs:/")):
        setup_tracking(settings.mlflow)
    model = DetectorModel(serving, settings.images, settings.provenance)
    model.load()
    server = kserve.ModelServer(
        http_port=args.http_port, grpc_port=args.grpc_port, workers=args.workers, enable_grpc=args.enable_grpc
    )
    server.dataplane = BinaryBytesDataPlane(model_registry=server.registered_models)
    if model.ready:
        server.start([model])
    else:  # serve health endpoints that say "not ready" rather than exit: the cause is in the log above
        server.register_model(model)
        server.start([])
    return 0
