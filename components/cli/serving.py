"""``apd serve`` and ``apd explain`` (KServe's ModelServer flags, parsed in serving/server.py and
serving/explainer.py), ``apd sink``, ``apd ui`` and ``apd auth hash-key``."""

import argparse
import sys

from components.cli.command import AddParser
from components.common.settings import Settings


def serve(argv: list[str]) -> int:
    """``apd serve ...``: the arguments go to KServe's own parser, unseen by ``apd``'s."""
    from serving.server import main

    return main(argv)


def explain(argv: list[str]) -> int:
    """``apd explain ...``: the explainer (Grad-CAM, torch) as KServe's explainer component; KServe's flags."""
    from serving.explainer import main

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
    run_ui(page, settings.images, args.host, args.port, settings.auth)


def hash_key(args: argparse.Namespace, settings: Settings) -> None:
    """``apd auth hash-key --name NAME``: the key on stdin (its first line) -> its keys-file line on stdout."""
    from serving.auth import key_line

    print(key_line(args.name, sys.stdin.readline().rstrip("\r\n")))


def add_commands(add_parser: AddParser) -> None:
    add_parser("serve", help="serve a model with KServe's ModelServer (see apd serve --help)")
    add_parser("explain", help="the explainer: Grad-CAM heatmaps for :explain (see apd explain --help)")
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

    auth = add_parser("auth", help="API keys of the model server and the page (APD_AUTH__*)")
    hash_parser = auth.add_subparsers(dest="auth_command", required=True).add_parser(
        "hash-key", help="read a key on stdin, print its keys-file line NAME:SHA256HEX (the key is never stored)"
    )
    hash_parser.add_argument("--name", required=True, help="the key's name (its rate-limit bucket, the log)")
    hash_parser.set_defaults(func=hash_key)
