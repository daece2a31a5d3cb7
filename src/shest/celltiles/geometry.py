"""Cell window geometry: the 16 µm field of view, its pixel size and the cell filters.

The SHEST heads were trained on windows of ``upper = round(16 µm / mpp)`` pixels
centred on the rounded nucleus centroid, cut as rows and columns
``[c - upper // 2, c + upper // 2)``. For an odd ``upper`` the window is therefore one
pixel narrower than ``upper``. The outline is still mapped into the tile with ``upper``
as the scale. Both follow the training code of recognizability/shest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WINDOW_UM = 16.0
PANE_PX = 112
TILE_PX = 2 * PANE_PX
MIN_NUCLEUS_UM = 2.0
MAX_NUCLEUS_UM = 16.0
# H-optimus-0 input statistics (RGB, after scaling to 0-1).
HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)


def _ceil_px(length_um: float, mpp: float) -> int:
    # Rounding to 6 decimals first keeps 2 / 0.2 = 10.000000000000002 from becoming 11.
    return int(math.ceil(round(length_um / mpp, 6)))


@dataclass(frozen=True)
class TileGeometry:
    """Pixel sizes of the cell window, the tile panes and the nucleus size filter.

    Parameters
    ----------
    mpp
        Level-0 pixel size of the slide in µm/px.
    window_um
        Side of the field of view around each nucleus, in µm.
    min_nucleus_um, max_nucleus_um
        Bounds on the larger bounding-box side of a nucleus, in µm; converted to
        pixels with ``ceil(um / mpp)`` as the published inference script does.
    """

    mpp: float
    window_um: float = WINDOW_UM
    min_nucleus_um: float = MIN_NUCLEUS_UM
    max_nucleus_um: float = MAX_NUCLEUS_UM
    pane_px: int = PANE_PX

    def __post_init__(self) -> None:
        if not self.mpp > 0:
            raise ValueError(f"mpp must be positive, found {self.mpp}")
        if not 0 <= self.min_nucleus_um < self.max_nucleus_um:
            raise ValueError(
                f"Nucleus size bounds must satisfy 0 <= min < max, found {self.min_nucleus_um} and {self.max_nucleus_um} µm"
            )
        if self.upper < 2:
            raise ValueError(f"A {self.window_um} µm window at {self.mpp} µm/px is under 2 px wide")

    @property
    def upper(self) -> int:
        """Nominal window side in pixels, ``round(window_um / mpp)``."""
        return int(round(self.window_um / self.mpp))

    @property
    def half(self) -> int:
        """Pixels from the centroid to the window's top and left edges."""
        return self.upper // 2

    @property
    def window_px(self) -> int:
        """Side of the window actually cut, ``2 * (upper // 2)`` pixels."""
        return 2 * self.half

    @property
    def min_nucleus_px(self) -> int:
        return _ceil_px(self.min_nucleus_um, self.mpp)

    @property
    def max_nucleus_px(self) -> int:
        return _ceil_px(self.max_nucleus_um, self.mpp)

    def as_dict(self) -> dict:
        """Return the geometry as plain values for provenance records."""
        return {
            "mpp": float(self.mpp),
            "window_um": float(self.window_um),
            "window_px": self.window_px,
            "upper_px": self.upper,
            "pane_px": self.pane_px,
            "tile_px": 2 * self.pane_px,
            "min_nucleus_um": float(self.min_nucleus_um),
            "max_nucleus_um": float(self.max_nucleus_um),
            "min_nucleus_px": self.min_nucleus_px,
            "max_nucleus_px": self.max_nucleus_px,
        }


@dataclass(frozen=True)
class CellSelection:
    """Cells of a table that get a tile, and counts of the cells filtered out.

    ``keep`` indexes rows of the cell table; ``cx`` and ``cy`` are the rounded
    centroids of those rows in level-0 pixels.
    """

    keep: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    n_input: int
    n_too_small: int
    n_too_large: int
    n_at_edge: int

    @property
    def n_kept(self) -> int:
        return int(self.keep.size)


def round_centroids(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round centroids to integer pixels, halves to even as Python's ``round`` does."""
    return np.rint(np.asarray(x, dtype=np.float64)).astype(np.int64), np.rint(np.asarray(y, dtype=np.float64)).astype(
        np.int64
    )


def select_cells(
    x: np.ndarray,
    y: np.ndarray,
    nucleus_px: np.ndarray,
    image_size: tuple[int, int],
    geometry: TileGeometry,
) -> CellSelection:
    """Apply the nucleus size filter and drop windows that cross the image edge.

    Parameters
    ----------
    x, y
        Nucleus centroids in level-0 pixels.
    nucleus_px
        Larger bounding-box side of each nucleus in pixels.
    image_size
        Level-0 (width, height) of the slide.
    geometry
        Window and filter sizes.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    nucleus_px = np.asarray(nucleus_px, dtype=np.float64)
    width, height = image_size
    cx, cy = round_centroids(x, y)
    half = geometry.half

    too_small = nucleus_px < geometry.min_nucleus_px
    too_large = nucleus_px > geometry.max_nucleus_px
    sized = ~(too_small | too_large)
    inside = (cx - half >= 0) & (cy - half >= 0) & (cx + half <= width) & (cy + half <= height)
    keep = np.flatnonzero(sized & inside)
    return CellSelection(
        keep=keep,
        cx=cx[keep],
        cy=cy[keep],
        n_input=int(x.size),
        n_too_small=int(too_small.sum()),
        n_too_large=int(too_large.sum()),
        n_at_edge=int((sized & ~inside).sum()),
    )
