"""Entry point of the ``shest`` command.

Each subcommand lives in its own module under :mod:`shest.cli` and exposes
``register(subparsers)``, which adds its parser and sets ``handler`` to a function
taking the parsed arguments. Modules import heavy libraries (torch, cellpose,
squidpy) inside the handler, so ``shest --help`` and ``shest --version`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time

from shest import __version__
from shest.errors import ShestError
from shest.logs import setup_logging

log = logging.getLogger("shest")

# Subcommand modules, in the order the help lists them (pipeline order).
COMMAND_MODULES = (
    "inspect",
    "qc",
    "segment",
    "merge_cells",
    "infer",
    "run",
    "niche",
    "niche_cohort",
    "convert_checkpoint",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shest",
        description=(
            "Cell types and gene expression for every nucleus of an H&E whole-slide image, "
            "with the SHEST heads on the H-optimus-0 foundation model."
        ),
    )
    parser.add_argument("--version", action="version", version=f"shest {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-v debug, -vv also libraries)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"shest.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return 2
    start = time.monotonic()
    try:
        result = args.handler(args)
    except ShestError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("Interrupted; no partial outputs were kept.")
        return 130
    log.debug("shest %s finished in %.1f s", args.command, time.monotonic() - start)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
