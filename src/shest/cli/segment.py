"""``shest segment``: nuclei of a slide, or of one chunk of its tile plan."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from shest.cli.common import (
    add_mpp_argument,
    add_output_arguments,
    add_parser,
    positive_float,
    positive_int,
    sample_name,
)

from shest.device import DEVICE_CHOICES
from shest.segmentation import BACKENDS

log = logging.getLogger(__name__)

# Largest --max-area-um2: the area of a 50 µm circle, far above any nucleus.
MAX_NUCLEUS_AREA_UM2 = 2000.0
# Largest --diameter-um for Cellpose.
MAX_DIAMETER_UM = 50.0


def register(subparsers) -> None:
    parser = add_parser(
        subparsers,
        "segment",
        "segment nuclei tile by tile over a tile plan (one chunk or the whole slide)",
        description=(
            "Segment nuclei over the tiles of a tile plan from `shest qc`. With --chunk I only the tiles of "
            "chunk I are segmented and S.chunk-IIII.cells.parquet is written (combine the chunks with "
            "`shest merge-cells`); without it every tile is segmented and S.cells.parquet, "
            "S.nuclei.geojson and S_segmentation_mqc.tsv are written."
        ),
    )

    parser.add_argument("slide", type=Path, help="slide file the plan was made for")
    parser.add_argument("--plan", type=Path, required=True, help="tile plan (S.tiles.json from `shest qc`)")
    parser.add_argument("--chunk", type=int, default=None, help="segment only this chunk of the plan (0-based)")
    add_mpp_argument(parser)
    add_output_arguments(parser)

    parser.add_argument(
        "--backend",
        "--segmenter",
        dest="backend",
        choices=BACKENDS,
        default="cellpose",
        help="segmentation method: cellpose (Cellpose-SAM by default, best on a GPU) or watershed "
        "(weight-free, fast on a CPU); --segmenter is the name `shest run` uses",
    )
    parser.add_argument(
        "--segmentation-mpp",
        type=_mpp_or_native,
        default=None,
        help="resolution to segment at in µm/px, or 'native' for the slide's own (default: the plan's target_mpp)",
    )

    parser.add_argument(
        "--cellpose-model",
        default="cpsam",
        help="Cellpose built-in model name (looked up in CELLPOSE_LOCAL_MODELS_PATH) or a model file path",
    )
    parser.add_argument(
        "--diameter-um",
        type=positive_float,
        default=None,
        help="expected nucleus diameter in µm for Cellpose (default: Cellpose-SAM uses the image at its own scale)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        help="256 x 256 px windows of a segmentation tile that Cellpose runs through its network at once; "
        "counts windows, not cells",
    )
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="device for Cellpose")

    parser.add_argument("--min-area-um2", type=positive_float, default=6.0, help="smallest nucleus kept, µm²")
    parser.add_argument("--max-area-um2", type=positive_float, default=200.0, help="largest nucleus kept, µm²")
    parser.add_argument(
        "--threshold-od",
        type=positive_float,
        default=None,
        help="watershed: fixed hematoxylin OD threshold (default: estimated per slide, the smaller of the Otsu and triangle thresholds)",
    )
    parser.add_argument(
        "--threshold-scale",
        type=positive_float,
        default=None,
        help="watershed: factor applied to the estimated threshold (below 1 finds fainter nuclei; default 1.1)",
    )

    parser.add_argument("--geojson-gzip", action="store_true", help="write S.nuclei.geojson.gz instead of .geojson")
    parser.set_defaults(handler=run)


def _mpp_or_native(text: str) -> float | str:
    if text.strip().lower() == "native":
        return "native"
    return positive_float(text)


def check_segment_options(args: argparse.Namespace) -> None:
    """Raise InputError for non-finite or out-of-range options, naming the option, before the slide is read."""
    import math

    from shest.cli.bounds import check_option
    from shest.errors import InputError
    from shest.segmentation.runner import MAX_SEGMENTATION_MPP
    from shest.segmentation.stain import MAX_OD
    from shest.segmentation.watershed import THRESHOLD_SCALE_RANGE

    if args.segmentation_mpp != "native":
        check_option(
            "--segmentation-mpp", args.segmentation_mpp, MAX_SEGMENTATION_MPP,
            "nuclei of 5-10 µm are under 5 px across at coarser resolutions",
        )
    check_option(
        "--max-area-um2", args.max_area_um2, MAX_NUCLEUS_AREA_UM2,
        f"a nucleus of {MAX_NUCLEUS_AREA_UM2:g} µm² is already 50 µm across",
    )
    check_option("--min-area-um2", args.min_area_um2)
    if args.min_area_um2 >= args.max_area_um2:
        raise InputError(
            f"--min-area-um2 ({args.min_area_um2:g}) must be smaller than --max-area-um2 ({args.max_area_um2:g})."
        )
    check_option(
        "--threshold-od", args.threshold_od, math.floor(MAX_OD * 100) / 100,
        f"{MAX_OD:.2f} is the optical density of a black pixel, so no nucleus would reach a higher threshold",
    )
    low, high = THRESHOLD_SCALE_RANGE
    check_option(
        "--threshold-scale", args.threshold_scale, high,
        "the estimated threshold times a larger factor lies above nearly every nucleus, "
        "and times a smaller one below the tissue around them",
        minimum=low,
    )
    check_option("--diameter-um", args.diameter_um, MAX_DIAMETER_UM, "no nucleus is that large")


def build_segmenter(args: argparse.Namespace):
    """Return the backend chosen by the command-line arguments."""
    from shest.segmentation.cellpose_backend import CellposeParams, CellposeSegmenter
    from shest.segmentation.watershed import WatershedParams, WatershedSegmenter

    if args.backend == "cellpose":
        if args.threshold_od is not None or args.threshold_scale is not None:
            log.warning("--threshold-od and --threshold-scale apply to the watershed backend only; ignored")
        params = CellposeParams(
            model=args.cellpose_model,
            diameter_um=args.diameter_um,
            batch_size=args.batch_size,
            min_area_um2=args.min_area_um2,
            max_area_um2=args.max_area_um2,
        )
        return CellposeSegmenter(params, device=args.device)
    if args.diameter_um is not None:
        log.warning("--diameter-um applies to the Cellpose backend only; ignored by watershed")
    overrides = {"min_area_um2": args.min_area_um2, "max_area_um2": args.max_area_um2, "threshold_od": args.threshold_od}
    if args.threshold_scale is not None:
        overrides["threshold_scale"] = args.threshold_scale
    return WatershedSegmenter(WatershedParams(**overrides))


def run(args: argparse.Namespace) -> int:
    from shest.segmentation.outputs import SlideOutputPaths, write_slide_outputs
    from shest.segmentation.runner import segment_slide
    from shest.segmentation.table import write_cell_table
    from shest.slide import open_slide
    from shest.tiling.plan import TilePlan

    sample = sample_name(args.sample, args.slide)
    check_segment_options(args)
    plan = TilePlan.load(args.plan)
    if args.chunk is not None:
        plan.chunk(args.chunk)  # validates the index before the slide is opened
    segmenter = build_segmenter(args)
    # shest qc --mpp X records X in the plan, so it need not be repeated here.
    with open_slide(args.slide, mpp=args.mpp, recorded_mpp=plan.slide_mpp) as slide:
        segmentation_mpp = slide.mpp if args.segmentation_mpp == "native" else args.segmentation_mpp
        result = segment_slide(slide, plan, segmenter, sample, chunk=args.chunk, segmentation_mpp=segmentation_mpp)

    outdir: Path = args.outdir
    if args.chunk is not None:
        path = outdir / f"{sample}.chunk-{args.chunk:04d}.cells.parquet"
        write_cell_table(path, result.table, result.metadata)
        log.info("Wrote %d nuclei of chunk %d to %s", len(result.table), args.chunk, path)
        return 0
    paths = SlideOutputPaths.for_sample(outdir, sample, args.geojson_gzip)
    write_slide_outputs(result.table, result.metadata, paths, sample)
    return 0
