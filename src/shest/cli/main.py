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
    except OSError as exc:
        # Filesystem problems (an output folder that is a file, no write permission, a
        # full disk) are the user's to fix, so they get one line, not a traceback.
        log.error("%s", describe_os_error(exc))
        return 1
    except KeyboardInterrupt:
        log.error("Interrupted; no partial outputs were kept.")
        return 130
    log.debug("shest %s finished in %.1f s", args.command, time.monotonic() - start)
    return int(result or 0)


def describe_os_error(exc: OSError) -> str:
    """Return a one-line message for a filesystem error, naming the path and a way out."""
    if exc.filename is None and exc.strerror is None:
        # Errors raised by shest itself (for example an output group that could not be
        # renamed into place) already name their files.
        return str(exc)
    path = exc.filename or "a file"
    reason = exc.strerror or str(exc)
    hints = {
        "FileExistsError": "a file with that name is in the way of an output folder; choose another --outdir",
        "NotADirectoryError": "a path that must be a folder is a file; choose another --outdir",
        "IsADirectoryError": "a path that must be a file is a folder; check the file arguments",
        "PermissionError": "check the permissions of the folder, or choose another --outdir",
        "FileNotFoundError": "check the path",
    }
    hint = hints.get(type(exc).__name__, "check the path, the free disk space and the permissions")
    return f"Cannot access {path}: {reason}; {hint}."


if __name__ == "__main__":
    sys.exit(main())
