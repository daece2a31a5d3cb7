"""`shest run` (being written)."""

from shest.cli.common import add_parser


def register(subparsers) -> None:
    parser = add_parser(subparsers, "run", "(not yet available)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    raise NotImplementedError("shest run is not written yet")
