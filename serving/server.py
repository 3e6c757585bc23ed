"""``apd serve``: KServe's ModelServer with the detector, taking KServe's own flags.

    apd serve --model_uri models:/apd-detector@champion --http_port 8080 --grpc_port 8081

Every ModelServer flag (``--http_port``, ``--grpc_port``, ``--workers``, ...) works as in any KServe container;
``--model_name`` and ``--model_uri`` default to ``APD_SERVING__MODEL_NAME`` / ``APD_SERVING__MODEL_URI``.
A model that fails to load is still registered, not ready: the server answers 503 and the log says why.
With ``APD_AUTH__ENABLED`` every endpoint but health, readiness and /metrics needs an API key (serving/auth.py).
"""

import argparse

import kserve
from kserve import model_server

from components.common.logging import configure_logging
from components.common.settings import Settings
from serving.auth_grpc import serve_guarded_grpc
from serving.dataplane import BinaryBytesDataPlane
from serving.detector import DetectorModel

GRPC_OVERHEAD_BYTES = 1024 * 1024  # the protobuf framing and the rest of an inference request around its images


def grpc_receive_limit(settings: Settings) -> int:
    """The largest gRPC request to accept: a full batch of images at the byte limit, as REST accepts. KServe's own
    default (8 MiB) turned a 9.4 MB JPEG into RESOURCE_EXHAUSTED over gRPC while REST scored it."""
    return settings.images.max_bytes * settings.serving.max_batch + GRPC_OVERHEAD_BYTES


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apd serve", parents=[model_server.parser], description=__doc__)
    # KServe's own flags: --model_name, and the gRPC receive cap (an explicit flag still wins)
    parser.set_defaults(
        model_name=settings.serving.model_name, grpc_max_receive_message_length=grpc_receive_limit(settings)
    )
    parser.add_argument("--model_uri", default=settings.serving.model_uri, help="models:/... URI or a folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    args = build_parser(settings).parse_args(argv)
    configure_logging(settings.logging)
    serving = settings.serving.model_copy(update={"model_name": args.model_name, "model_uri": args.model_uri})
    if serving.model_uri.startswith(("models:/", "runs:/")):  # MLflow only then: the predictor image has none
        from components.common.tracking import setup_tracking

        setup_tracking(settings.mlflow)
    # KServe's gRPC server reads its message caps from the module's own parse of the command line.
    model_server.args.grpc_max_receive_message_length = args.grpc_max_receive_message_length
    model = DetectorModel(serving, settings.images, settings.provenance, settings.cache)
    model.load()
    # With API keys on, gRPC is a guarded copy of KServe's server (serving/auth_grpc.py), not KServe's own.
    server = kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        enable_grpc=args.enable_grpc and not settings.auth.enabled,
    )
    server.dataplane = BinaryBytesDataPlane(model_registry=server.registered_models, auth=settings.auth)
    if args.enable_grpc and server.dataplane.guard is not None:
        serve_guarded_grpc(server, server.dataplane.guard, args.max_threads, vars(model_server.args))
    if model.ready:
        server.start([model])
    else:  # serve health endpoints that say "not ready" rather than exit: the cause is in the log above
        server.register_model(model)
        server.start([])
    return 0
