"""`shest niche` (being written)."""

from shest.cli.common import add_parser


def register(subparsers) -> None:
    parser = add_parser(subparsers, "niche", "(not yet available)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    raise NotImplementedError("shest niche is not written yet")
