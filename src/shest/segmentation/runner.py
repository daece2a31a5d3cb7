"""Segment one slide, or one chunk of its tile plan, and describe the result.

This is what ``shest segment`` and ``shest run`` call: it checks that the plan fits
the slide, chooses how tiles are read, calibrates the backend on the slide, segments
the tiles and returns the sorted cell table with its metadata.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from shest import __version__
from shest.errors import InputError
from shest.segmentation.calibration import calibrate
from shest.segmentation.merge import remove_duplicates
from shest.segmentation.table import TABLE_FORMAT, build_table, sort_and_number
from shest.segmentation.wsi import Segmenter, plan_reads, segment_tiles
from shest.slide.reader import Slide
from shest.tiling.plan import MAX_TARGET_MPP, TilePlan

log = logging.getLogger(__name__)

# Relative difference between the plan's and the slide's µm/px that is still the same slide.
PLAN_MPP_TOLERANCE = 0.01
# Coarsest segmentation resolution, the limit that `shest qc` puts on --target-mpp.
MAX_SEGMENTATION_MPP = MAX_TARGET_MPP


@dataclass
class SegmentationResult:
    """A cell table (GeoDataFrame) and the metadata stored with it."""

    table: Any
    metadata: dict[str, Any]


def check_plan_matches_slide(plan: TilePlan, slide: Slide) -> None:
    """Raise InputError when the plan was made for another slide or another µm/px."""
    if (plan.slide_width, plan.slide_height) != slide.dimensions:
        raise InputError(
            f"The tile plan is for a slide of {plan.slide_width} x {plan.slide_height} px "
            f"({plan.slide_name}), but {slide.path.name} is {slide.dimensions[0]} x {slide.dimensions[1]} px. "
            "Use the plan that `shest qc` wrote for this slide."
        )
    if abs(plan.slide_mpp / slide.mpp - 1.0) > PLAN_MPP_TOLERANCE:
        raise InputError(
            f"The tile plan was made at {plan.slide_mpp:.4f} µm/px but the slide is read at {slide.mpp:.4f} µm/px. "
            "Pass the same --mpp to `shest qc` and `shest segment`."
        )


def check_segmentation_mpp(segmentation_mpp: float | None, plan: TilePlan, slide: Slide) -> float:
    """Return the resolution to segment at: ``segmentation_mpp``, else the plan's ``target_mpp``.

    Raises
    ------
    InputError
        The value is not finite, coarser than :data:`MAX_SEGMENTATION_MPP` or finer
        than the slide; the message names the option that set it.
    """
    if segmentation_mpp is not None:
        option, target = f"--segmentation-mpp {segmentation_mpp:g}", segmentation_mpp
        fix = f"pass --segmentation-mpp native or a value from {slide.mpp:.4g} to {MAX_SEGMENTATION_MPP:g}"
    else:
        option, target = f"The tile plan's target_mpp {plan.target_mpp:g} (--target-mpp of `shest qc`)", plan.target_mpp
        fix = "recreate the plan with `shest qc --target-mpp` in that range, or pass --segmentation-mpp"
    if not math.isfinite(target) or target <= 0:
        raise InputError(f"{option} is not a finite positive resolution in µm/px; {fix}.")
    if target > MAX_SEGMENTATION_MPP:
        raise InputError(
            f"{option} is coarser than {MAX_SEGMENTATION_MPP:g} µm/px, where nuclei of 5-10 µm are under 5 px "
            f"across and cannot be segmented; {fix}."
        )
    if target < slide.mpp * 0.999:
        raise InputError(f"{option} is finer than the slide's {slide.mpp:.4f} µm/px; {fix}.")
    return target


def plan_tissue_area_mm2(plan: TilePlan) -> float:
    """Return the tissue area of the plan: each tile's core area times its tissue fraction, in mm²."""
    total_px = sum(
        (tile.core_x1 - tile.core_x0) * (tile.core_y1 - tile.core_y0) * tile.tissue_fraction for tile in plan.tiles
    )
    return round(total_px * plan.slide_mpp * plan.slide_mpp / 1e6, 6)


def segment_slide(
    slide: Slide,
    plan: TilePlan,
    segmenter: Segmenter,
    sample: str,
    chunk: int | None = None,
    segmentation_mpp: float | None = None,
) -> SegmentationResult:
    """Segment the tiles of ``plan`` (or of one chunk) and return the cell table.

    Parameters
    ----------
    slide
        The open slide the plan was made for.
    plan
        Tile plan with core regions. Nuclei whose centroid lies outside its tissue
        or region-of-interest polygons are dropped.
    segmenter
        A backend (watershed or Cellpose).
    sample
        Sample name recorded in the metadata.
    chunk
        Segment only this chunk of the plan; ``None`` segments every tile.
    segmentation_mpp
        Resolution to segment at in µm/px; defaults to the plan's ``target_mpp``.

    Raises
    ------
    InputError
        The plan does not fit the slide, the chunk is outside the plan, or the
        resolution is not finite, coarser than :data:`MAX_SEGMENTATION_MPP` or finer
        than the slide's.
    """
    check_plan_matches_slide(plan, slide)
    tiles = plan.chunk(chunk) if chunk is not None else list(plan.tiles)
    target = check_segmentation_mpp(segmentation_mpp, plan, slide)
    if not plan.tiles:
        reasons = " ".join(plan.warnings) or "the plan has no tiles."
        log.warning("The tile plan of %s is empty (%s): writing an empty cell table.", plan.slide_name, reasons)
    elif not tiles:
        log.warning("Chunk %s of the tile plan has no tiles: writing an empty cell table.", chunk)

    reads = plan_reads(slide, target)
    log.info(
        "Segmenting %d tiles of %s with %s at %.4f µm/px (level %d%s)",
        len(tiles), slide.path.name, segmenter.name, reads.mpp, reads.level,
        "" if reads.resample == 1.0 else f", resampled x{reads.resample:.4f}",
    )
    stains = calibrate(slide, segmenter, reads)
    region = plan.in_region if plan.has_region else None
    columns = segment_tiles(slide, tiles, segmenter, stains, reads, region)
    table = build_table(columns)
    if chunk is None:
        # The guard that merge-cells applies to chunk tables, so that a whole-slide run
        # and the merge of its chunks give the same table.
        table = sort_and_number(remove_duplicates(table))
    log.info("Kept %d nuclei", len(table))

    metadata: dict[str, Any] = {
        "format": TABLE_FORMAT,
        "sample": sample,
        "slide": slide.path.name,
        "slide_width": slide.dimensions[0],
        "slide_height": slide.dimensions[1],
        "mpp": slide.mpp,
        "segmentation_mpp": round(reads.mpp, 6),
        "segmentation": segmenter.describe(),
        "stains": stains.to_dict(),
        "plan": {
            "slide_name": plan.slide_name,
            "target_mpp": plan.target_mpp,
            "tile_size_um": plan.tile_size_um,
            "overlap_um": plan.overlap_um,
            "tiles": len(plan.tiles),
            "chunks": plan.chunks,
            "tissue_area_mm2": plan_tissue_area_mm2(plan),
            "tissue_region": plan.tissue is not None,
            "roi": plan.roi is not None,
        },
        "chunk": chunk,
        "chunks_included": [chunk] if chunk is not None else list(range(plan.chunks)),
        "version": __version__,
    }
    return SegmentationResult(table, metadata)
