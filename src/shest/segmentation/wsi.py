"""Whole-slide segmentation, tile by tile over a tile plan.

Each tile of the plan is read with its overlap, segmented, and measured. A nucleus is
kept by the one tile whose core region contains its centroid, and only when it lies
whole inside that tile: a nucleus touching the tile's border (other than the slide's
own edge) is cut and is dropped. Because the overlap on each side (half the plan's
overlap, 16 µm by default) exceeds the radius of a nucleus, the owning tile reads
every owned nucleus whole, so no nucleus is lost or duplicated at a seam.

Memory contains one tile's images at a time plus the growing cell table, whatever the
slide size. The table peaks at about 2.7 KB per nucleus while it is written
(benchmarks/segmentation_speed.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from shest.logs import progress
from shest.segmentation.features import TileGeometry, empty_measurements, measure_nuclei
from shest.segmentation.stain import StainVectors, hematoxylin_od
from shest.slide.reader import Slide
from shest.tiling.plan import Tile

log = logging.getLogger(__name__)

# A pyramid level whose pixel size is within this fraction of the requested one is
# segmented as it is, without resampling (for example 0.499 µm/px for 0.5).
LEVEL_MPP_TOLERANCE = 0.10
# Warn when more than this fraction of owned nuclei is dropped for touching a tile border.
BORDER_DROP_WARNING = 0.005


@dataclass(frozen=True)
class CalibrationWindow:
    """A window of the slide at the segmentation resolution, with the pixels that are tissue."""

    rgb: np.ndarray
    """uint8 RGB image, H x W x 3."""
    tissue: np.ndarray
    """Boolean mask, H x W: True on tissue, False on glass and ink."""


class Segmenter(Protocol):
    """Interface of a segmentation backend."""

    name: str

    def calibrate(self, windows: Sequence[CalibrationWindow], mpp: float, stains: StainVectors) -> None:
        """Prepare for one slide from sample windows of its tissue (see :mod:`shest.segmentation.calibration`)."""

    def segment(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        """Return an int label image of the nuclei in an RGB tile."""

    def describe(self) -> dict:
        """Return the backend's name, parameters and calibration for the output metadata."""


@dataclass(frozen=True)
class ReadPlan:
    """Pyramid level and resampling that give tiles at the segmentation resolution."""

    level: int
    level_downsample: float
    resample: float
    """Output pixels per level pixel (1.0 when the level is used as it is)."""
    mpp: float
    """µm/px of the segmented images."""


def plan_reads(slide: Slide, target_mpp: float) -> ReadPlan:
    """Choose the pyramid level and resampling that give ``target_mpp`` µm/px.

    A level within :data:`LEVEL_MPP_TOLERANCE` of the target is used without
    resampling, so its pixels are segmented as scanned. Otherwise the deepest level
    finer than the target is read and reduced with area averaging.
    """
    best: tuple[int, float] | None = None
    for index, level in enumerate(slide.levels):
        level_mpp = slide.mpp * level.downsample
        if abs(level_mpp / target_mpp - 1.0) <= LEVEL_MPP_TOLERANCE:
            best = (index, level.downsample)
    if best is not None:
        index, downsample = best
        return ReadPlan(index, downsample, 1.0, slide.mpp * downsample)
    index = slide.best_level_for_downsample(target_mpp / slide.mpp)
    downsample = slide.levels[index].downsample
    resample = slide.mpp * downsample / target_mpp
    return ReadPlan(index, downsample, resample, target_mpp)


def read_box(slide: Slide, box: tuple[int, int, int, int], reads: ReadPlan) -> tuple[np.ndarray, TileGeometry]:
    """Read a level-0 box (x, y, width, height) at the segmentation resolution.

    Returns the RGB image and its exact position and scale on the slide.
    """
    x, y, width, height = box
    downsample = reads.level_downsample
    level_x0 = math.floor(x / downsample)
    level_y0 = math.floor(y / downsample)
    read_w = max(1, math.ceil((x + width) / downsample) - level_x0)
    read_h = max(1, math.ceil((y + height) / downsample) - level_y0)
    # ceil() puts the read position inside the first level pixel, so the reader's
    # floor(x / downsample) lands on level_x0 even for downsamples like 4.0003.
    location = (math.ceil(level_x0 * downsample), math.ceil(level_y0 * downsample))
    image = slide.read_region(location, reads.level, (read_w, read_h))
    if reads.resample != 1.0:
        out_w = max(1, round(read_w * reads.resample))
        out_h = max(1, round(read_h * reads.resample))
        image = np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.Resampling.BOX))
    geometry = TileGeometry(
        x0=level_x0 * downsample,
        y0=level_y0 * downsample,
        scale_x=image.shape[1] / (read_w * downsample),
        scale_y=image.shape[0] / (read_h * downsample),
        slide_mpp=slide.mpp,
    )
    return image, geometry


# Level-0 (x, y) centroids -> whether each lies in the plan's region (TilePlan.in_region).
RegionTest = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class TileResult:
    """Nuclei kept by one tile, and the counts dropped for touching its border or lying outside the region."""

    columns: dict[str, np.ndarray]
    dropped_at_border: int
    dropped_outside_region: int = 0


def segment_tile(
    slide: Slide,
    tile: Tile,
    segmenter: Segmenter,
    stains: StainVectors,
    reads: ReadPlan,
    region: RegionTest | None = None,
) -> TileResult:
    """Segment one tile and return the nuclei it owns.

    A nucleus is kept when its centroid lies in the tile's core and it does not touch
    a border of the tile that is not also the slide's edge. With ``region``, its
    centroid must also lie in the plan's tissue and region of interest.
    """
    image, geometry = read_box(slide, tile.box, reads)
    labels = segmenter.segment(image, geometry.image_mpp)
    hematoxylin = hematoxylin_od(image, stains)
    slide_width, slide_height = slide.dimensions
    # Sides (left, top, right, bottom) where the tile ends at the slide's edge.
    slide_edge = np.array([
        tile.x <= 0,
        tile.y <= 0,
        tile.x + tile.width >= slide_width,
        tile.y + tile.height >= slide_height,
    ])
    dropped = 0
    outside = 0

    def keep(x: np.ndarray, y: np.ndarray, touches: np.ndarray) -> np.ndarray:
        nonlocal dropped, outside
        owned = np.asarray(tile.owns(x, y), dtype=bool)
        cut = (touches & ~slide_edge).any(axis=1)
        dropped += int((owned & cut).sum())
        whole_and_owned = owned & ~cut
        if region is None:
            return whole_and_owned
        inside = np.asarray(region(x, y), dtype=bool)
        outside += int((whole_and_owned & ~inside).sum())
        return whole_and_owned & inside

    columns = measure_nuclei(labels, hematoxylin, geometry, keep=keep)
    columns["tile_id"] = np.full(len(columns["x"]), tile.tile_id, dtype=np.int64)
    return TileResult(columns, dropped, outside)


def segment_tiles(
    slide: Slide,
    tiles: Sequence[Tile],
    segmenter: Segmenter,
    stains: StainVectors,
    reads: ReadPlan,
    region: RegionTest | None = None,
) -> dict[str, np.ndarray]:
    """Segment ``tiles`` one after another and return the concatenated columns of their nuclei.

    ``region`` (the plan's :meth:`~shest.tiling.TilePlan.in_region`) drops nuclei whose
    centroid lies outside the plan's tissue or region of interest.
    """
    parts: list[dict[str, np.ndarray]] = []
    dropped = 0
    outside = 0
    for tile in progress(tiles, desc="segmentation", unit="tile", logger=log):
        result = segment_tile(slide, tile, segmenter, stains, reads, region)
        parts.append(result.columns)
        dropped += result.dropped_at_border
        outside += result.dropped_outside_region
    kept_count = sum(len(part["x"]) for part in parts)
    if dropped and dropped > BORDER_DROP_WARNING * max(kept_count, 1):
        log.warning(
            "%d nuclei were dropped because they touch a tile border; they are larger than the "
            "plan's overlap allows. Recreate the plan with a larger --overlap-um.", dropped,
        )
    elif dropped:
        log.debug("%d nuclei dropped for touching a tile border", dropped)
    if outside:
        log.info("%d nuclei outside the plan's tissue or region of interest were dropped", outside)
    return concatenate_columns(parts)


def concatenate_columns(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate per-tile column dicts (an empty list gives empty columns)."""
    if not parts:
        columns = empty_measurements()
        columns["tile_id"] = np.empty(0, dtype=np.int64)
        return columns
    names = parts[0].keys()
    return {name: np.concatenate([part[name] for part in parts]) for name in names}
