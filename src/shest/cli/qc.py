"""``shest qc``: tissue detection, slide QC and the tile plan of one slide."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from shest.cli.common import (
    add_mpp_argument,
    add_output_arguments,
    add_parser,
    non_negative_float,
    positive_float,
    positive_int,
    sample_name,
)

log = logging.getLogger(__name__)


def fraction(text: str) -> float:
    """argparse type for a float in [0, 1)."""
    value = non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 up to (not including) 1, found {text}")
    return value


def check_qc_options(args: argparse.Namespace) -> None:
    """Raise InputError for non-finite or out-of-range options, naming the option, before the slide is read."""
    from shest.cli.bounds import check_option
    from shest.qc.tiles import MAX_QC_TILE_MPP
    from shest.tiling.plan import check_plan_parameters
    from shest.tissue.thumbnail import MAX_THUMBNAIL_SIDE

    check_plan_parameters(args.target_mpp, args.tile_size_um, args.overlap_um)
    check_option("--min-tissue-area-mm2", args.min_tissue_area_mm2)
    check_option("--max-hole-area-mm2", args.max_hole_area_mm2)
    check_option("--thumbnail-mpp", args.thumbnail_mpp)
    check_option(
        "--thumbnail-min-side", args.thumbnail_min_side, MAX_THUMBNAIL_SIDE,
        f"thumbnails are at most {MAX_THUMBNAIL_SIDE} px on their longer side",
    )
    check_option(
        "--focus-mpp", args.focus_mpp, MAX_QC_TILE_MPP,
        "focus is scored on the edges of nuclei, which coarser tiles do not resolve",
    )
    check_option("--blur-threshold", args.blur_threshold)


def register(subparsers) -> None:
    parser = add_parser(
        subparsers,
        "qc",
        "detect tissue, measure slide QC and plan tiles over the tissue",
        description=(
            "Detect tissue on a thumbnail, measure focus, ink, background, stain vectors and pixel-size "
            "consistency, and plan tiles over the tissue. Writes S.qc.json, S_qc_mqc.tsv, S.thumbnail.png, "
            "S.tissue_mask.png, S.tissue.geojson and S.tiles.json. A slide without tissue gives an empty "
            "plan and a warning (exit 0)."
        ),
    )
    parser.add_argument("slide", type=Path, help="slide file (SVS, NDPI, MRXS, SCN, BIF, TIFF, OME-TIFF, PNG, JPEG)")
    add_mpp_argument(parser)
    parser.add_argument(
        "--roi",
        type=Path,
        default=None,
        help="GeoJSON polygons in level-0 pixels (for example exported from QuPath); tissue outside them is ignored",
    )
    add_output_arguments(parser)

    plan = parser.add_argument_group("tile plan")
    plan.add_argument("--target-mpp", type=positive_float, default=0.5, help="resolution (µm/px) at which tiles are segmented")
    plan.add_argument("--tile-size-um", type=positive_float, default=512.0, help="tile side in µm")
    plan.add_argument("--overlap-um", type=non_negative_float, default=32.0, help="overlap between neighbouring tiles in µm")
    plan.add_argument("--chunks", type=positive_int, default=1, help="number of chunks the tiles are split into")
    plan.add_argument(
        "--min-tile-tissue-fraction",
        type=fraction,
        default=0.0,
        help="keep a tile only if more than this fraction of its core is tissue",
    )

    tissue = parser.add_argument_group("tissue detection")
    tissue.add_argument(
        "--min-tissue-area-mm2", type=non_negative_float, default=0.004, help="drop tissue pieces smaller than this (mm²)"
    )
    tissue.add_argument(
        "--max-hole-area-mm2", type=non_negative_float, default=0.05, help="fill holes in tissue up to this size (mm²)"
    )
    tissue.add_argument("--thumbnail-mpp", type=positive_float, default=8.0, help="thumbnail resolution in µm/px")
    tissue.add_argument(
        "--thumbnail-min-side",
        type=positive_int,
        default=1024,
        help="use a finer thumbnail when its longer side would be shorter than this (px)",
    )

    focus = parser.add_argument_group("focus and stain")
    focus.add_argument("--focus-mpp", type=positive_float, default=0.5, help="resolution of the focus tiles in µm/px")
    focus.add_argument("--focus-max-tiles", type=positive_int, default=256, help="most tissue tiles read for focus and stain")
    focus.add_argument(
        "--blur-threshold",
        type=positive_float,
        default=100.0,
        help="variance of the Laplacian (0-255 grey levels) below which a focus tile counts as blurred",
    )
    parser.set_defaults(handler=run)


def run(args) -> int:
    from dataclasses import replace

    from shest.errors import InputError
    from shest.qc import PlanParams, QcParams, run_slide_qc
    from shest.qc.report import QcThresholds
    from shest.qc.tiles import TileSampleParams
    from shest.tissue.detect import TissueParams

    sample = sample_name(args.sample, args.slide)
    check_qc_options(args)
    try:
        params = QcParams(
            thumbnail_mpp=args.thumbnail_mpp,
            thumbnail_min_side=args.thumbnail_min_side,
            tissue=TissueParams(min_tissue_area_mm2=args.min_tissue_area_mm2, max_hole_area_mm2=args.max_hole_area_mm2),
            tiles=TileSampleParams(mpp=args.focus_mpp, max_tiles=args.focus_max_tiles),
            thresholds=replace(QcThresholds(), blur_threshold=args.blur_threshold),
        )
    except ValueError as exc:
        raise InputError(f"Invalid QC parameter: {exc}") from None
    plan_params = PlanParams(
        target_mpp=args.target_mpp,
        tile_size_um=args.tile_size_um,
        overlap_um=args.overlap_um,
        chunks=args.chunks,
        min_tissue_fraction=args.min_tile_tissue_fraction,
    )
    run_slide_qc(args.slide, args.outdir, sample, mpp=args.mpp, roi_path=args.roi, params=params, plan_params=plan_params)
    return 0
