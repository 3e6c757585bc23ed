"""The dispatcher: ``apd``'s parser built from the area modules, one call to the handler, one mapping of its end."""

import argparse
import sys
from collections.abc import Callable

from components.cli import batch, data, monitoring, pipeline, rollout, serving
from components.cli.command import Handler
from components.cli.exits import exit_for, report
from components.common.logging import configure_logging
from components.common.settings import Settings

AREAS = (serving, data, pipeline, rollout, monitoring, batch)
"""The area modules, in the order ``apd --help`` lists their commands."""

PASSTHROUGH: dict[str, Callable[[list[str]], int]] = {"serve": serving.serve, "explain": serving.explain}
"""Commands whose arguments another parser takes (KServe's ModelServer flags): ``apd`` only dispatches."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="apd", description="AI Product-photo Detector.")
    commands = parser.add_subparsers(dest="command", required=True)
    for area in AREAS:
        area.add_commands(commands.add_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASSTHROUGH:
        return PASSTHROUGH[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.logging)
    handler: Handler = args.func
    try:
        handler(args, settings)
    except Exception as exc:
        end = exit_for(exc)
        if end is None:
            raise
        return report(exc, end)
    return 0
