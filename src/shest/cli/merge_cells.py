"""`shest merge-cells` (being written)."""

from shest.cli.common import add_parser


def register(subparsers) -> None:
    parser = add_parser(subparsers, "merge-cells", "(not yet available)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    raise NotImplementedError("shest merge-cells is not written yet")
