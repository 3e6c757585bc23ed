"""``apd serve`` (KServe's ModelServer flags, parsed in serving/server.py), ``apd sink`` and ``apd ui``."""

import argparse

from components.cli.command import AddParser
from components.common.settings import Settings


def serve(argv: list[str]) -> int:
    """``apd serve ...``: the arguments go to KServe's own parser, unseen by ``apd``'s."""
    from serving.server import main

    return main(argv)


def sink(args: argparse.Namespace, settings: Settings) -> None:
    from serving.sink import run_sink

    run_sink(settings, args.host, args.port)


def ui(args: argparse.Namespace, settings: Settings) -> None:
    """``apd ui``: the moderators' web page, a proxy to the served model's KServe API."""
    from serving.ui import run_ui

    flags = {
        "model_url": args.model_url,
        "model_name": args.model_name,
        "compare_url": args.compare_url,
        "compare_model_name": args.compare_model_name,
    }
    page = settings.ui.model_copy(update={key: value for key, value in flags.items() if value is not None})
    run_ui(page, settings.images, args.host, args.port)


def add_commands(add_parser: AddParser) -> None:
    add_parser("serve", help="serve a model with KServe's ModelServer (see apd serve --help)")
    sink_parser = add_parser("sink", help="the payload sink: KServe logger CloudEvents -> Parquet records on S3")
    sink_parser.add_argument("--port", type=int, default=8080, help="HTTP port (default: 8080)")
    sink_parser.add_argument("--host", default="0.0.0.0", help="interface to bind (default: all)")  # noqa: S104 (a pod)
    sink_parser.set_defaults(func=sink)

    ui_parser = add_parser("ui", help="web page for manual checks: drop an image, see the served model's verdict")
    ui_parser.add_argument("--port", type=int, default=8090, help="HTTP port (default: 8090)")
    ui_parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: loopback; 0.0.0.0 in a pod)"
    )
    ui_parser.add_argument(
        "--model-url", help="model server base URL (default: $APD_UI__MODEL_URL or http://127.0.0.1:8080)"
    )
    ui_parser.add_argument("--model-name", help="served model name (default: $APD_UI__MODEL_NAME or apd-detector)")
    ui_parser.add_argument(
        "--compare-url", help="second model server for the compare view (default: $APD_UI__COMPARE_URL)"
    )
    ui_parser.add_argument("--compare-model-name", help="model name on the compare server (default: --model-name)")
    ui_parser.set_defaults(func=ui)
