"""Tumour regions, their margin and the stroma, drawn on a raster from the cell positions.

The rule, applied on a grid of ``grid_um`` pixels covering the cells:

1. Tissue: pixels with at least one analysed cell within ``tissue_radius_um``.
2. Tumour: tissue pixels with at least ``tumour_min_cells`` tumour cells within
   ``tumour_radius_um``, where those tumour cells also make up at least
   ``tumour_min_fraction`` of all analysed cells within that radius. Connected
   tumour areas (8-connectivity) smaller than ``min_region_um2`` are dropped and holes
   smaller than that are filled (then clipped to tissue again).
3. Margin: tissue pixels outside the tumour within ``margin_um`` of it (Euclidean
   distance on the grid).
4. Stroma: the remaining tissue pixels.

Cell counts within a radius are a convolution of the per-pixel cell counts with a
disc, computed by FFT, so the cost grows with the raster area and not with the
number of cells. Cell positions are snapped to pixel centres, so every boundary is
known to within about one pixel.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shest.niche.cells import AnalysisCells
from shest.errors import InputError
from shest.niche.notes import Notes
from shest.niche.params import LIMITS, NicheParams

log = logging.getLogger(__name__)

COMPARTMENTS = ("tumour", "margin", "stroma")
# Largest region raster, for example 5000 x 5000 px: a whole 25 x 75 mm glass slide
# at the default 10 µm grid fits. Measured on 2-core x86_64 at this size, the region
# steps peaked at 2.2 GB resident with the default radii and 2.9 GB with a 2 mm
# tumour radius on a 2 µm grid (FFT buffers of a large disc).
MAX_RASTER_PIXELS = 25_000_000


@dataclass
class Compartments:
    """Tissue compartments on the raster and the compartment of each analysed cell.

    Masks have shape (rows, columns) = (y, x); pixel (r, c) covers
    ``origin_um + (c, r) * grid_um`` to one pixel further.
    """

    grid_um: float
    origin_um: tuple[float, float]
    tissue: np.ndarray
    tumour: np.ndarray
    margin: np.ndarray
    stroma: np.ndarray
    cell_compartment: pd.Categorical
    n_tumour_regions: int

    def area_mm2(self, name: str) -> float:
        """Return the area of ``tissue``, ``tumour``, ``margin`` or ``stroma`` in mm²."""
        mask = getattr(self, name)
        return float(mask.sum()) * self.grid_um * self.grid_um / 1e6


def find_compartments(cells: AnalysisCells, params: NicheParams, notes: Notes) -> Compartments:
    """Apply the tumour-region rule and return the compartments and each cell's compartment.

    Raises
    ------
    InputError
        The raster would exceed :data:`MAX_RASTER_PIXELS` (see :func:`raster_shape`).
    """
    from scipy import ndimage

    grid = params.grid_um
    pad = raster_padding_um(params)
    low = cells.xy_um.min(axis=0) - pad
    n_cols, n_rows = raster_shape(cells.xy_um, params)
    pixel_col = np.floor((cells.xy_um[:, 0] - low[0]) / grid).astype(np.int64)
    pixel_row = np.floor((cells.xy_um[:, 1] - low[1]) / grid).astype(np.int64)
    flat = pixel_row * n_cols + pixel_col

    all_counts = np.bincount(flat, minlength=n_rows * n_cols).reshape(n_rows, n_cols).astype(np.float64)
    tumour_cells = cells.mask(cells.tumour_type)
    tumour_counts = (
        np.bincount(flat[tumour_cells], minlength=n_rows * n_cols).reshape(n_rows, n_cols).astype(np.float64)
    )

    tissue = _disc_sum(all_counts, params.tissue_radius_um / grid) >= 1
    near_all = _disc_sum(all_counts, params.tumour_radius_um / grid)
    near_tumour = _disc_sum(tumour_counts, params.tumour_radius_um / grid)
    tumour = tissue & (near_tumour >= params.tumour_min_cells) & (near_tumour >= params.tumour_min_fraction * near_all)
    min_pixels = params.min_region_um2 / (grid * grid)
    tumour = _fill_small_holes(_drop_small_objects(tumour, min_pixels), min_pixels) & tissue
    _, n_regions = ndimage.label(tumour, structure=np.ones((3, 3), dtype=bool))

    if tumour.any():
        distance = ndimage.distance_transform_edt(~tumour, sampling=grid)
        margin = tissue & ~tumour & (distance <= params.margin_um)
    else:
        margin = np.zeros_like(tumour)
    stroma = tissue & ~tumour & ~margin

    names = np.full(cells.n_cells, "stroma", dtype=object)
    names[margin.ravel()[flat]] = "margin"
    names[tumour.ravel()[flat]] = "tumour"
    compartment = pd.Categorical(names, categories=list(COMPARTMENTS))

    result = Compartments(
        grid_um=grid,
        origin_um=(float(low[0]), float(low[1])),
        tissue=tissue,
        tumour=tumour,
        margin=margin,
        stroma=stroma,
        cell_compartment=compartment,
        n_tumour_regions=int(n_regions),
    )
    log.info(
        "Regions: tissue %.3f mm², %d tumour regions %.3f mm², margin %.3f mm², stroma %.3f mm² (grid %.1f µm)",
        result.area_mm2("tissue"),
        n_regions,
        result.area_mm2("tumour"),
        result.area_mm2("margin"),
        result.area_mm2("stroma"),
        grid,
    )
    return result


def raster_padding_um(params: NicheParams) -> float:
    """Return the margin (µm) added around the cells so that every disc and the margin band fit on the raster."""
    return max(params.tissue_radius_um, params.tumour_radius_um, params.margin_um) + 2 * params.grid_um


def raster_shape(xy_um: np.ndarray, params: NicheParams) -> tuple[int, int]:
    """Return the (columns, rows) of the region raster for cells at ``xy_um``.

    Raises
    ------
    InputError
        The raster would exceed :data:`MAX_RASTER_PIXELS`. The message gives the
        cells' own extent and the ``--grid-um`` that would fit.
    """
    grid = params.grid_um
    pad = raster_padding_um(params)
    extent = np.ptp(xy_um, axis=0) if len(xy_um) else np.zeros(2)
    padded = extent + 2 * pad
    n_cols, n_rows = _raster_sides(padded, grid)
    if n_cols * n_rows <= MAX_RASTER_PIXELS:
        return n_cols, n_rows

    message = (
        f"The tumour-region raster would be {n_cols:,} x {n_rows:,} px at --grid-um {grid:g}, above the limit of "
        f"{MAX_RASTER_PIXELS:,} px. The analysed cells span {extent[0] / 1000:.1f} x {extent[1] / 1000:.1f} mm, "
        f"and the raster adds {pad:g} µm on each side for the largest of --tissue-radius-um, "
        "--tumour-radius-um and --margin-um."
    )
    needed = float(np.ceil(np.sqrt(padded[0] * padded[1] / MAX_RASTER_PIXELS) * 1.01))
    while np.prod(_raster_sides(padded, needed)) > MAX_RASTER_PIXELS:
        needed += 1.0
    if needed <= LIMITS["grid_um"][0]:
        message += f" Pass --grid-um {needed:.0f} or more."
    else:
        message += (
            " No allowed --grid-um fits, so obsm['spatial_um'] probably holds cells far from the rest or "
            "coordinates in the wrong unit; check the input."
        )
    raise InputError(message)


def _raster_sides(padded_um: np.ndarray, grid_um: float) -> tuple[int, int]:
    n_cols, n_rows = np.ceil(padded_um / grid_um).astype(np.int64) + 1
    return int(n_cols), int(n_rows)


def disc_kernel(radius_px: float) -> np.ndarray:
    """Return a binary disc: pixels whose centre lies within ``radius_px`` of the centre pixel."""
    half = int(np.floor(radius_px))
    offsets = np.arange(-half, half + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius_px * radius_px + 1e-9).astype(np.float64)


def _disc_sum(counts: np.ndarray, radius_px: float) -> np.ndarray:
    """Return, per pixel, the number of cells in the disc around it (exact integers)."""
    from scipy.signal import oaconvolve

    kernel = disc_kernel(radius_px)
    if kernel.size == 1:
        return counts.copy()
    # The FFT leaves rounding errors far below 0.5 on integer counts.
    return np.rint(oaconvolve(counts, kernel, mode="same"))


def _drop_small_objects(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    from scipy import ndimage

    if min_pixels <= 1 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def _fill_small_holes(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    from scipy import ndimage

    if min_pixels <= 1 or not mask.any():
        return mask
    # Holes are 4-connected background components that do not touch the raster edge.
    labels, n = ndimage.label(~mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = sizes < min_pixels
    fill[0] = False
    fill[border] = False
    return mask | fill[labels]
