"""`shest convert-checkpoint` (being written)."""

from shest.cli.common import add_parser


def register(subparsers) -> None:
    parser = add_parser(subparsers, "convert-checkpoint", "(not yet available)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    raise NotImplementedError("shest convert-checkpoint is not written yet")
