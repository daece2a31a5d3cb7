"""``shest niche-cohort``: combine the per-slide tables of ``shest niche`` into one table per metric."""

from __future__ import annotations

import logging
from pathlib import Path

from shest.cli.common import SAMPLE_PATTERN, add_parser
from shest.errors import InputError

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = add_parser(
        subparsers,
        "niche-cohort",
        "combine per-slide `shest niche` tables into one table per metric with a sample column",
        description=(
            "Read the S.niche_<metric>.csv tables written by `shest niche` (files, or folders searched "
            "recursively) and write <name>_<metric>.csv, one table per metric with a sample column."
        ),
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="TABLE_OR_DIR",
        help="S.niche_<metric>.csv files or folders holding them",
    )
    parser.add_argument("--outdir", type=Path, default=Path("."), help="folder for the cohort tables")
    parser.add_argument("--sample", default="cohort", help="name used as the prefix of the cohort tables")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from shest.niche.cohort import combine_tables, find_tables, write_cohort_tables

    if not SAMPLE_PATTERN.match(args.sample):
        raise InputError(
            f"Invalid cohort name {args.sample!r}: use letters, digits, '.', '_' and '-' only, "
            "starting with a letter or digit."
        )
    tables = find_tables(args.inputs)
    combined = combine_tables(tables)
    paths = write_cohort_tables(combined, args.outdir, args.sample)
    log.info("Wrote %d cohort tables to %s", len(paths), args.outdir)
    return 0
