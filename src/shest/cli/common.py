"""Arguments and checks shared by several subcommands."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from shest.errors import InputError

SAMPLE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SLIDE_SUFFIXES = (".ome.tiff", ".ome.tif")
# Hub id of the backbone the released SHEST heads were trained on (shest.model.backbone
# defines the same; the CLI modules must not import that module, which imports torch).
HOPTIMUS0_ID = "hf-hub:bioptimus/H-optimus-0"


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


def sample_name(sample: str | None, slide: Path) -> str:
    """Return a validated sample name, derived from the slide file name when not given."""
    if sample is None:
        name = slide.name
        for suffix in SLIDE_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        else:
            name = slide.stem
        sample = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-") or "sample"
    if not SAMPLE_PATTERN.match(sample):
        raise InputError(
            f"Invalid sample name {sample!r}: use letters, digits, '.', '_' and '-' only, "
            "starting with a letter or digit (no spaces or slashes)."
        )
    return sample


def positive_float(text: str) -> float:
    """argparse type for a strictly positive float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, found {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type for a float of at least 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, found {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, found {text}")
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
