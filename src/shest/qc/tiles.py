"""A deterministic sample of tissue tiles read at a fixed resolution for focus and stain QC."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from shest.logs import progress
from shest.slide.reader import Slide
from shest.tissue.detect import TissueMask

log = logging.getLogger(__name__)


# Coarsest resolution of the focus and stain tiles: at 2 µm/px a nucleus is a few
# pixels and its edges, which the focus score measures, are gone.
MAX_QC_TILE_MPP = 2.0


@dataclass(frozen=True)
class TileSampleParams:
    """Parameters of the high-resolution tiles that focus and stain QC read.

    Tiles of ``tile_px`` pixels at ``mpp`` µm/px (128 µm by default) lie on a grid
    over the slide. Those whose thumbnail tissue fraction is at least
    ``min_tissue_fraction`` are tissue tiles. At most ``max_tiles`` of them, evenly
    spaced in row-major order, are read.
    """

    mpp: float = 0.5
    tile_px: int = 256
    min_tissue_fraction: float = 0.75
    max_tiles: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.mpp <= MAX_QC_TILE_MPP or self.tile_px < 16 or self.max_tiles < 1:
            raise ValueError(
                f"QC tiles need 0 < mpp <= {MAX_QC_TILE_MPP:g}, tile_px >= 16 and max_tiles >= 1, "
                f"found {self.mpp}, {self.tile_px} and {self.max_tiles}"
            )
        if not 0 < self.min_tissue_fraction <= 1:
            raise ValueError(f"min_tissue_fraction must lie in (0, 1], found {self.min_tissue_fraction}")


@dataclass(frozen=True)
class TissueTile:
    """A QC tile: its level-0 box and the tissue fraction of that box in the thumbnail mask."""

    x: int
    y: int
    width: int
    height: int
    tissue_fraction: float

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height


@dataclass(frozen=True)
class TileSample:
    """The sampled tissue tiles, how many were eligible, and the resolution they are read at."""

    tiles: list[TissueTile]
    eligible: int
    mpp: float
    tile_size_level0: int


def sample_tissue_tiles(slide: Slide, tissue: TissueMask, params: TileSampleParams = TileSampleParams()) -> TileSample:
    """Choose the QC tiles of a slide from its tissue mask.

    The read resolution is ``params.mpp`` or the slide's own pixel size when that is
    coarser. Grid tiles that would stick out of the slide are skipped, except on a
    slide smaller than one tile, which gives one tile covering it.
    """
    mpp = max(params.mpp, slide.mpp)
    tile0 = max(1, round(params.tile_px * mpp / slide.mpp))
    width0, height0 = slide.dimensions
    thumb = tissue.thumbnail
    mask = tissue.mask
    tiles: list[TissueTile] = []
    tile_w, tile_h = min(tile0, width0), min(tile0, height0)
    for y in range(0, max(1, height0 // tile0) * tile0, tile0):
        row0 = int(y / thumb.downsample_y)
        row1 = max(row0 + 1, int(np.ceil((y + tile_h) / thumb.downsample_y)))
        for x in range(0, max(1, width0 // tile0) * tile0, tile0):
            col0 = int(x / thumb.downsample_x)
            col1 = max(col0 + 1, int(np.ceil((x + tile_w) / thumb.downsample_x)))
            window = mask[row0:row1, col0:col1]
            fraction = float(window.mean()) if window.size else 0.0
            if fraction >= params.min_tissue_fraction:
                tiles.append(TissueTile(x, y, tile_w, tile_h, round(fraction, 4)))
    eligible = len(tiles)
    if eligible > params.max_tiles:
        keep = np.unique(np.round(np.linspace(0, eligible - 1, params.max_tiles)).astype(int))
        tiles = [tiles[i] for i in keep]
    log.debug("QC tiles: %d of %d tissue tiles at %.3f µm/px", len(tiles), eligible, mpp)
    return TileSample(tiles=tiles, eligible=eligible, mpp=mpp, tile_size_level0=tile0)


def read_tiles(slide: Slide, sample: TileSample) -> Iterator[tuple[TissueTile, np.ndarray]]:
    """Yield each sampled tile with its RGB image at the sample's resolution."""
    for tile in progress(sample.tiles, desc="QC", unit="tile", logger=log):
        image, _ = slide.read_region_at_mpp(tile.box, sample.mpp)
        yield tile, image
