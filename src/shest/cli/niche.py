"""``shest niche``: spatial niche analysis of the predicted cells of one slide."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from shest.cli.common import add_parser, non_negative_float, positive_float, positive_int
from shest.model.constants import UNASSIGNED_NAME

log = logging.getLogger(__name__)


def distance_list(text: str) -> tuple[float, ...]:
    """argparse type for a comma-separated list of positive distances in µm."""
    try:
        values = sorted({float(item) for item in text.split(",") if item.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected distances in µm separated by commas (e.g. 20,50,100), found {text!r}"
        ) from None
    if not values or values[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected positive distances in µm (e.g. 20,50,100), found {text!r}")
    return tuple(values)


def fraction(text: str) -> float:
    """argparse type for a number in (0, 1]."""
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], found {value}")
    return value


def register(subparsers) -> None:
    from shest.niche.params import GRAPH_TYPES, NicheParams

    defaults = NicheParams()
    parser = add_parser(
        subparsers,
        "niche",
        "spatial niche analysis of a slide's predicted cells: graph, enrichment, niches, Moran's I, infiltration",
        description=(
            "Spatial analysis of the cells in an S.h5ad from `shest infer`: a spatial graph (squidpy), "
            "neighbourhood enrichment, co-occurrence and interaction counts of cell types, cellular niches "
            "(k-means on local compositions), Moran's I of the reconstructed genes, and lymphocyte infiltration "
            "of tumour regions. All distances are in µm. Writes S.niche.h5ad (a new file), CSV tables, PNG "
            "figures and MultiQC tables."
        ),
    )
    parser.add_argument("h5ad", type=Path, help="S.h5ad written by `shest infer` or `shest run`")
    parser.add_argument("--outdir", type=Path, default=Path("."), help="folder for the output files")
    parser.add_argument(
        "--sample",
        default=None,
        help=(
            "sample name used as the prefix of every output file (default: uns['shest']['sample'], else the file name)"
        ),
    )

    graph = parser.add_argument_group("spatial graph")
    graph.add_argument("--graph", choices=GRAPH_TYPES, default=defaults.graph, help="how cells are connected")
    graph.add_argument(
        "--max-edge-um",
        type=positive_float,
        default=defaults.max_edge_um,
        help="delaunay: drop edges longer than this (µm)",
    )
    graph.add_argument(
        "--radius-um",
        type=positive_float,
        default=defaults.radius_um,
        help="radius: connect cells closer than this (µm)",
    )
    graph.add_argument(
        "--n-neighbors", type=positive_int, default=defaults.n_neighbors, help="knn: neighbours per cell"
    )

    stats = parser.add_argument_group("cell-type statistics")
    stats.add_argument(
        "--n-perms",
        type=positive_int,
        default=defaults.n_perms,
        help="label permutations of the neighbourhood enrichment test",
    )
    stats.add_argument(
        "--co-occurrence-um",
        type=distance_list,
        default=",".join(f"{v:g}" for v in defaults.co_occurrence_um),
        metavar="D1,D2,...",
        help="distances (µm) at which co-occurrence ratios are computed",
    )
    stats.add_argument(
        "--keep-unassigned",
        action="store_true",
        help=f"analyse cells below the probability cutoff as the category {UNASSIGNED_NAME!r} "
        "instead of leaving them out",
    )
    stats.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of the permutations and of k-means (default: %(default)s)"
    )

    niches = parser.add_argument_group("cellular niches")
    niches.add_argument("--n-niches", type=positive_int, default=defaults.n_niches, help="number of k-means niches")
    niches.add_argument(
        "--niche-neighbors",
        type=positive_int,
        default=defaults.niche_neighbors,
        help="window size: nearest cells, the cell itself included",
    )
    niches.add_argument(
        "--niche-radius-um",
        type=positive_float,
        default=None,
        help="window of all cells within this radius (µm) instead of --niche-neighbors",
    )

    genes = parser.add_argument_group("spatially variable genes")
    genes.add_argument(
        "--moran-top",
        type=positive_int,
        default=defaults.moran_top,
        help="genes with the highest Moran's I written to the table",
    )

    infiltration = parser.add_argument_group("immune infiltration")
    infiltration.add_argument(
        "--tumour-type", default=defaults.tumour_type, help="obs['cell_type'] category of tumour cells"
    )
    infiltration.add_argument(
        "--lymphocyte-type", default=defaults.lymphocyte_type, help="obs['cell_type'] category of lymphocytes"
    )
    infiltration.add_argument(
        "--margin-um",
        type=positive_float,
        default=defaults.margin_um,
        help="width (µm) of the margin band outside tumour regions",
    )
    infiltration.add_argument(
        "--contact-um",
        type=positive_float,
        default=defaults.contact_um,
        help="a lymphocyte within this distance (µm) of a tumour cell counts as in contact",
    )
    infiltration.add_argument(
        "--tumour-radius-um",
        type=positive_float,
        default=defaults.tumour_radius_um,
        help="tumour-region rule: radius (µm) within which tumour cells are counted",
    )
    infiltration.add_argument(
        "--tumour-min-cells",
        type=positive_int,
        default=defaults.tumour_min_cells,
        help="tumour-region rule: minimum tumour cells within the radius",
    )
    infiltration.add_argument(
        "--tumour-min-fraction",
        type=fraction,
        default=defaults.tumour_min_fraction,
        help="tumour-region rule: minimum share of tumour cells among the cells within the radius",
    )
    infiltration.add_argument(
        "--tissue-radius-um",
        type=positive_float,
        default=defaults.tissue_radius_um,
        help="a point within this distance (µm) of a cell counts as tissue",
    )
    infiltration.add_argument(
        "--grid-um",
        type=positive_float,
        default=defaults.grid_um,
        help="pixel size (µm) of the raster on which regions are drawn",
    )
    infiltration.add_argument(
        "--min-region-um2",
        type=non_negative_float,
        default=defaults.min_region_um2,
        help="tumour regions smaller than this (µm²) are dropped and holes smaller than this filled",
    )

    parser.add_argument(
        "--slide", type=Path, default=None, help="the slide image, drawn under the niche map (optional)"
    )
    parser.set_defaults(handler=run)


def run(args) -> int:
    from shest.niche.params import NicheParams
    from shest.niche.run import run_niche

    params = NicheParams(
        graph=args.graph,
        max_edge_um=args.max_edge_um,
        radius_um=args.radius_um,
        n_neighbors=args.n_neighbors,
        n_perms=args.n_perms,
        co_occurrence_um=tuple(args.co_occurrence_um),
        n_niches=args.n_niches,
        niche_neighbors=args.niche_neighbors,
        niche_radius_um=args.niche_radius_um,
        moran_top=args.moran_top,
        margin_um=args.margin_um,
        contact_um=args.contact_um,
        tumour_type=args.tumour_type,
        lymphocyte_type=args.lymphocyte_type,
        tumour_radius_um=args.tumour_radius_um,
        tumour_min_cells=args.tumour_min_cells,
        tumour_min_fraction=args.tumour_min_fraction,
        tissue_radius_um=args.tissue_radius_um,
        grid_um=args.grid_um,
        min_region_um2=args.min_region_um2,
        keep_unassigned=args.keep_unassigned,
        seed=args.seed,
    )
    run_niche(args.h5ad, args.outdir, sample=args.sample, params=params, slide=args.slide)
    return 0
