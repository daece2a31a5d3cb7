"""Read cell windows from a slide block by block, so that neighbouring cells share reads.

Cells are sorted by the square block of the slide that holds their rounded centroid
and cut into batches in that order. For each block a batch touches, one region
covering the windows of the batch's cells in that block is read from level 0, and
every window is cut from it. Peak memory is one region plus one batch of windows,
whatever the number of cells.

A batch is described by a :class:`CellBatch` (positions, centroids and outlines, a
few kilobytes), so it can be sent to a worker process that reads and builds it
there (see :mod:`shest.celltiles.workers`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
import torch

from shest.celltiles.geometry import HOPTIMUS_MEAN, HOPTIMUS_STD, TileGeometry
from shest.celltiles.quadruple import PaneBatch, build_pane_batch

log = logging.getLogger(__name__)

# Side of the slide blocks that group cells for one read, in window sides.
BLOCK_WINDOWS = 32


@dataclass
class CellBatch:
    """The cells of one model batch, with what is needed to read and build their tiles.

    ``positions`` are indices into the selection (0 .. n_kept - 1), so results can be
    written into arrays in cell-table order whatever the reading order. ``cx`` and
    ``cy`` are rounded centroids in level-0 pixels and ``block`` the read block of
    each cell; the cells of one block are contiguous. ``rings`` contains the outer
    rings of all cells as level-0 (x, y) vertices, cell ``i`` owning rows
    ``ring_offsets[i]:ring_offsets[i + 1]``.
    """

    positions: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    block: np.ndarray
    rings: np.ndarray
    ring_offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.positions.size)


@dataclass
class WindowBatch:
    """Windows of a batch of cells and their outlines in pane coordinates.

    ``positions`` are indices into the selection, as in :class:`CellBatch`.
    """

    positions: np.ndarray
    windows: np.ndarray
    pane_vertices: list[np.ndarray]

    def __len__(self) -> int:
        return int(self.positions.size)


def exterior_ring_coordinates(geometries: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Return the outer rings of the nuclei as (V, 2) level-0 (x, y) vertices and (N + 1) offsets.

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
    offsets = np.searchsorted(owner, np.arange(len(geoms) + 1))
    return coords, offsets


def block_order(cx: np.ndarray, cy: np.ndarray, block_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Sort cells by the block holding their centroid (row-major) and return the order and the block key of each."""
    bx = cx // block_px
    by = cy // block_px
    order = np.lexsort((cx, cy, bx, by))
    keys = by[order] * (int(bx.max(initial=0)) + 1) + bx[order]
    return order, keys


def plan_cell_batches(
    cx: np.ndarray,
    cy: np.ndarray,
    geometries: Sequence,
    geometry: TileGeometry,
    batch_size: int,
    block_px: int | None = None,
) -> Iterator[CellBatch]:
    """Yield the selected cells in block order, ``batch_size`` at a time, with their outlines.

    Parameters
    ----------
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
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, found {batch_size}")
    cx = np.asarray(cx, dtype=np.int64)
    cy = np.asarray(cy, dtype=np.int64)
    if cx.size == 0:
        return
    block_px = block_px or BLOCK_WINDOWS * max(geometry.window_px, 1)
    order, keys = block_order(cx, cy, block_px)
    geometries = np.asarray(geometries, dtype=object)
    for start in range(0, order.size, batch_size):
        members = order[start : start + batch_size]
        rings, offsets = exterior_ring_coordinates(geometries[members])
        yield CellBatch(
            positions=members,
            cx=cx[members],
            cy=cy[members],
            block=keys[start : start + batch_size],
            rings=rings,
            ring_offsets=offsets,
        )


def read_windows(slide, batch: CellBatch, geometry: TileGeometry) -> np.ndarray:
    """Read the (N, side, side, 3) uint8 windows of a batch, one slide region per block it touches."""
    half = geometry.half
    side = geometry.window_px
    windows = np.empty((len(batch), side, side, 3), dtype=np.uint8)
    bounds = np.flatnonzero(np.diff(batch.block)) + 1
    for start, stop in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(batch)]])):
        cx, cy = batch.cx[start:stop], batch.cy[start:stop]
        bx0, by0 = int(cx.min()) - half, int(cy.min()) - half
        bx1, by1 = int(cx.max()) + half, int(cy.max()) + half
        region = slide.read_region((bx0, by0), 0, (bx1 - bx0, by1 - by0))
        for index, (x, y) in enumerate(zip(cx - half - bx0, cy - half - by0), start=start):
            windows[index] = region[y : y + side, x : x + side]
    return windows


def pane_vertices(batch: CellBatch, geometry: TileGeometry) -> list[np.ndarray]:
    """Map the outlines of a batch into (row, column) pane vertices, as :func:`outline_to_pane` does."""
    counts = np.diff(batch.ring_offsets)
    x0 = np.repeat(batch.cx - geometry.half, counts)
    y0 = np.repeat(batch.cy - geometry.half, counts)
    rows = np.rint(geometry.pane_px * (batch.rings[:, 1] - y0) / geometry.upper)
    cols = np.rint(geometry.pane_px * (batch.rings[:, 0] - x0) / geometry.upper)
    vertices = np.stack([rows, cols], axis=1).astype(np.int64)
    return np.split(vertices, batch.ring_offsets[1:-1])


def build_cell_batch(slide, batch: CellBatch, geometry: TileGeometry) -> PaneBatch:
    """Read the windows of a batch and build its panes."""
    windows = read_windows(slide, batch, geometry)
    return build_pane_batch(windows, pane_vertices(batch, geometry), batch.positions, geometry.pane_px)


def iter_window_batches(
    slide,
    cx: np.ndarray,
    cy: np.ndarray,
    geometries: Sequence,
    geometry: TileGeometry,
    batch_size: int,
    block_px: int | None = None,
) -> Iterator[WindowBatch]:
    """Yield batches of windows for the selected cells, reading one slide region per block and batch.

    Parameters are those of :func:`plan_cell_batches`, after ``slide``, an open
    :class:`shest.slide.Slide`.
    """
    for batch in plan_cell_batches(cx, cy, geometries, geometry, batch_size, block_px):
        yield WindowBatch(batch.positions, read_windows(slide, batch, geometry), pane_vertices(batch, geometry))


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
    """Yield ``(positions, tiles)`` with normalised (N, 3, 224, 224) quadruple tiles, built in this thread."""
    for batch in plan_cell_batches(cx, cy, geometries, geometry, batch_size):
        panes = build_cell_batch(slide, batch, geometry)
        yield panes.positions, panes.to_tiles(mean=mean, std=std)
