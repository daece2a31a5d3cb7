"""Arguments and checks shared by several subcommands."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

# Imported here for the subcommands, which name the default backbone and check --sample.
from shest.io.naming import SAMPLE_PATTERN, sample_name
from shest.model.constants import HOPTIMUS0_ID


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show an option's default unless it is None, False or already named in the help text."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "(default" in text or default is None or default is False or default == "" or default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def add_parser(subparsers, name: str, help_text: str, description: str | None = None) -> argparse.ArgumentParser:
    """Add a subcommand parser that also accepts ``-v`` after the subcommand name."""
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=description or help_text,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output (-v debug)"
    )
    return parser


def add_mpp_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mpp",
        type=float,
        default=None,
        help="pixel size of level 0 in µm/px; overrides the slide's metadata (needed when it has none)",
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--outdir", type=Path, default=Path("."), help="folder for the output files")
    parser.add_argument(
        "--sample",
        default=None,
        help="sample name used as the prefix of every output file (default: the slide file name without suffix)",
    )


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, found {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type for a strictly positive, finite float."""
    value = _finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, found {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type for a finite float of at least 0."""
    value = _finite_float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, found {text}")
    return value


def probability(text: str) -> float:
    """argparse type for a probability: a finite float from 0 to 1."""
    value = _finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability from 0 to 1, found {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type for an integer of at least 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 0, found {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type for a strictly positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, found {value}")
    return value
