"""Per-cell windows and the SHEST quadruple tile that the model reads."""

from shest.celltiles.geometry import (
    HOPTIMUS_MEAN,
    HOPTIMUS_STD,
    PANE_PX,
    TILE_PX,
    WINDOW_UM,
    CellSelection,
    TileGeometry,
    select_cells,
)
from shest.celltiles.quadruple import build_quadruple_tiles, outline_to_pane
from shest.celltiles.windows import iter_window_batches, tile_batches

__all__ = [
    "HOPTIMUS_MEAN",
    "HOPTIMUS_STD",
    "PANE_PX",
    "TILE_PX",
    "WINDOW_UM",
    "CellSelection",
    "TileGeometry",
    "build_quadruple_tiles",
    "iter_window_batches",
    "outline_to_pane",
    "select_cells",
    "tile_batches",
]
