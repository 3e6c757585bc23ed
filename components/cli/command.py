"""What an area module of ``apd`` gives the dispatcher: ``add_commands(add_parser)`` and its handlers.

``add_parser`` is the top-level ``add_subparsers()``'s ``add_parser``: an area adds its commands with it, in the
order ``apd --help`` lists them, and sets each leaf's ``func`` to its handler. A handler imports what its command
needs inside its body (``apd --help`` stays fast, importing the CLI imports no kserve, kfp or torch), returns
nothing when the command succeeded (exit 0) and raises otherwise: ``components.cli.exits`` maps what it raised to
the exit code.
"""

import argparse
from collections.abc import Callable

from components.common.settings import Settings

AddParser = Callable[..., argparse.ArgumentParser]
"""``add_subparsers().add_parser``: ``add_parser(name, help=...)`` -> the command's parser."""

Handler = Callable[[argparse.Namespace, Settings], None]
"""A command's body: the parsed flags and the settings (``APD_*``); raises to end with a non-zero exit."""
