"""``shest merge-cells``: combine the chunk cell tables of one slide."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from shest.cli.common import add_parser

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = add_parser(
        subparsers,
        "merge-cells",
        "combine the chunk cell tables of one slide into S.cells.parquet, S.nuclei.geojson and a MultiQC table",
        description=(
            "Combine the S.chunk-IIII.cells.parquet files that `shest segment --chunk` wrote for one slide. "
            "Duplicates are removed and cell ids renumbered; the same chunks in any order give "
            "byte-identical outputs."
        ),
    )
    parser.add_argument("chunks", type=Path, nargs="+", metavar="CHUNK", help="chunk cell tables (*.cells.parquet)")
    parser.add_argument("--outdir", type=Path, default=Path("."), help="folder for the output files")
    parser.add_argument(
        "--sample",
        default=None,
        help="sample name used as the prefix of every output file (default: the sample recorded in the chunks)",
    )
    parser.add_argument("--geojson-gzip", action="store_true", help="write S.nuclei.geojson.gz instead of .geojson")
    parser.add_argument(
        "--allow-missing-chunks",
        action="store_true",
        help="merge even when chunks of the tile plan are missing (their nuclei are then absent)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shest.cli.common import sample_name
    from shest.segmentation.merge import merge_chunk_tables
    from shest.segmentation.outputs import SlideOutputPaths, write_slide_outputs

    table, metadata = merge_chunk_tables(args.chunks, allow_missing=args.allow_missing_chunks)
    # sample_name only validates a given name; the path is a placeholder it never reads.
    sample = sample_name(args.sample or metadata.get("sample") or "sample", Path("sample"))
    metadata["sample"] = sample
    paths = SlideOutputPaths.for_sample(args.outdir, sample, args.geojson_gzip)
    write_slide_outputs(table, metadata, paths, sample)
    return 0
