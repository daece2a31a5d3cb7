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
from shest.segmentation.table import TABLE_FORMAT, build_table
from shest.segmentation.wsi import Segmenter, calibrate, plan_reads, segment_tiles
from shest.slide.reader import Slide
from shest.tiling.plan import TilePlan

log = logging.getLogger(__name__)

# Relative difference between the plan's and the slide's µm/px that is still the same slide.
PLAN_MPP_TOLERANCE = 0.01


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
        Tile plan with core regions.
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
        resolution is finer than the slide's.
    """
    check_plan_matches_slide(plan, slide)
    tiles = plan.chunk(chunk) if chunk is not None else list(plan.tiles)
    target = segmentation_mpp if segmentation_mpp is not None else plan.target_mpp
    if not math.isfinite(target) or target < slide.mpp * 0.999:
        raise InputError(
            f"Segmentation resolution {target} µm/px is finer than the slide's {slide.mpp:.4f} µm/px; "
            "choose a value of at least the slide's pixel size."
        )
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
    columns = segment_tiles(slide, tiles, segmenter, stains, reads)
    table = build_table(columns)
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
        },
        "chunk": chunk,
        "chunks_included": [chunk] if chunk is not None else list(range(plan.chunks)),
        "version": __version__,
    }
    return SegmentationResult(table, metadata)
