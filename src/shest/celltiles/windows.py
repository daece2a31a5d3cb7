"""Read cell windows from a slide block by block, so that neighbouring cells share reads.

Cells are grouped by the square block of the slide that holds their rounded
centroid. One region per block, the block's cells' windows together, is read from
level 0 and every window is cut from it. Peak memory is one region plus one batch of
windows, whatever the number of cells.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
import torch

from shest.celltiles.geometry import HOPTIMUS_MEAN, HOPTIMUS_STD, TileGeometry
from shest.celltiles.quadruple import build_quadruple_tiles, outline_to_pane

log = logging.getLogger(__name__)

# Side of the slide blocks that group cells for one read, in window sides.
BLOCK_WINDOWS = 32


@dataclass
class WindowBatch:
    """Windows of a batch of cells and their outlines in pane coordinates.

    ``positions`` are indices into the selection (0 .. n_kept - 1), so results can be
    written into arrays in cell-table order whatever the reading order.
    """

    positions: np.ndarray
    windows: np.ndarray
    pane_vertices: list[np.ndarray]

    def __len__(self) -> int:
        return int(self.positions.size)


def exterior_rings(geometries: Sequence) -> list[np.ndarray]:
    """Return the outer ring of each nucleus as an (V, 2) array of (x, y) level-0 pixels.

    A MultiPolygon contributes its largest part.
    """
    geoms = np.asarray(geometries, dtype=object)
    multi = shapely.get_type_id(geoms) == 6
    if multi.any():
        geoms = geoms.copy()
        for index in np.flatnonzero(multi):
            parts = shapely.get_parts(geoms[index])
            geoms[index] = parts[int(np.argmax(shapely.area(parts)))]
    rings = shapely.get_exterior_ring(geoms)
    coords, owner = shapely.get_coordinates(rings, return_index=True)
    splits = np.searchsorted(owner, np.arange(1, len(geoms)))
    return np.split(coords, splits)


def block_order(cx: np.ndarray, cy: np.ndarray, block_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort cells by the block holding their centroid (row-major) and return the order and block boundaries."""
    bx = cx // block_px
    by = cy // block_px
    order = np.lexsort((cx, cy, bx, by))
    keys = by[order] * (int(bx.max(initial=0)) + 1) + bx[order]
    starts = np.flatnonzero(np.diff(keys)) + 1
    bounds = np.concatenate([[0], starts, [order.size]])
    return order, bounds


def iter_window_batches(
    slide,
    cx: np.ndarray,
    cy: np.ndarray,
    geometries: Sequence,
    geometry: TileGeometry,
    batch_size: int,
    block_px: int | None = None,
) -> Iterator[WindowBatch]:
    """Yield batches of windows for the selected cells, reading one slide region per block.

    Parameters
    ----------
    slide
        An open :class:`shest.slide.Slide`.
    cx, cy
        Rounded centroids of the selected cells, level-0 pixels; their windows must lie
        inside the image (see :func:`shest.celltiles.geometry.select_cells`).
    geometries
        Nucleus outlines (shapely polygons, level-0 pixels) in the same order.
    geometry
        Window geometry.
    batch_size
        Cells per batch; the last batch may be smaller.
    block_px
        Side of the blocks that share one read; by default 32 window sides.
    """
    n = int(np.asarray(cx).size)
    if n == 0:
        return
    half = geometry.half
    side = geometry.window_px
    block_px = block_px or BLOCK_WINDOWS * max(side, 1)
    order, bounds = block_order(np.asarray(cx), np.asarray(cy), block_px)
    geometries = np.asarray(geometries, dtype=object)

    windows = np.empty((batch_size, side, side, 3), dtype=np.uint8)
    positions = np.empty(batch_size, dtype=np.int64)
    vertices: list[np.ndarray] = []
    filled = 0
    for start, stop in zip(bounds[:-1], bounds[1:]):
        members = order[start:stop]
        bx0 = int(cx[members].min()) - half
        by0 = int(cy[members].min()) - half
        bx1 = int(cx[members].max()) + half
        by1 = int(cy[members].max()) + half
        region = slide.read_region((bx0, by0), 0, (bx1 - bx0, by1 - by0))
        rings = exterior_rings(geometries[members])
        for member, ring in zip(members, rings):
            x0 = int(cx[member]) - half
            y0 = int(cy[member]) - half
            windows[filled] = region[y0 - by0 : y0 - by0 + side, x0 - bx0 : x0 - bx0 + side]
            positions[filled] = member
            vertices.append(outline_to_pane(ring, x0, y0, geometry.upper, geometry.pane_px))
            filled += 1
            if filled == batch_size:
                yield WindowBatch(positions.copy(), windows.copy(), vertices)
                vertices = []
                filled = 0
    if filled:
        yield WindowBatch(positions[:filled].copy(), windows[:filled].copy(), vertices)


def tile_batches(
    slide,
    cx: np.ndarray,
    cy: np.ndarray,
    geometries: Sequence,
    geometry: TileGeometry,
    batch_size: int,
    mean: Sequence[float] = HOPTIMUS_MEAN,
    std: Sequence[float] = HOPTIMUS_STD,
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(positions, tiles)`` with normalised (N, 3, 224, 224) quadruple tiles."""
    for batch in iter_window_batches(slide, cx, cy, geometries, geometry, batch_size):
        tiles = build_quadruple_tiles(batch.windows, batch.pane_vertices, geometry.pane_px, mean=mean, std=std)
        yield batch.positions, tiles
