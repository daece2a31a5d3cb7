"""Tile plans over tissue, with core regions that partition the slide.

The slide is cut into a grid of *core* cells of side ``tile_size - overlap`` (level-0
pixels). Each tile is its core grown by half the overlap on every side and clipped to
the slide. Cores never overlap and cover the whole grid, so an object is owned by
exactly one tile: the one whose core contains its centroid. As long as the overlap is
larger than the largest object, every owned object lies whole inside its tile.

A plan is saved as JSON: the parameters, the slide it was made for, and one record
per tile. ``chunk`` numbers split the tiles into contiguous, equally sized groups for
scatter across cluster jobs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from shest.errors import InputError
from shest.io.atomic import atomic_path

PLAN_FORMAT = "shest-tile-plan/1"
# Smallest slide side worth segmenting: a few cell windows (16 µm each) across.
MIN_SLIDE_SIDE_UM = 64.0


@dataclass(frozen=True)
class Tile:
    """One tile of a plan, in level-0 pixels.

    ``x, y, width, height`` is the box to read (core plus overlap, clipped to the
    slide). ``core_x0 <= x < core_x1`` and ``core_y0 <= y < core_y1`` is the region
    the tile owns.
    """

    tile_id: int
    row: int
    col: int
    x: int
    y: int
    width: int
    height: int
    core_x0: int
    core_y0: int
    core_x1: int
    core_y1: int
    tissue_fraction: float
    chunk: int = 0

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height

    def owns(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | bool:
        """Return whether level-0 points (x, y) lie in this tile's core region."""
        return (x >= self.core_x0) & (x < self.core_x1) & (y >= self.core_y0) & (y < self.core_y1)


@dataclass
class TilePlan:
    """Tiles over the tissue of one slide, with the parameters that produced them."""

    slide_name: str
    slide_width: int
    slide_height: int
    slide_mpp: float
    target_mpp: float
    tile_size_um: float
    overlap_um: float
    tile_size_px: int
    overlap_px: int
    chunks: int = 1
    tiles: list[Tile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tiles)

    def __iter__(self) -> Iterator[Tile]:
        return iter(self.tiles)

    def split(self, chunks: int) -> TilePlan:
        """Return a copy whose tiles carry chunk numbers 0..chunks-1 in row-major order.

        Chunks are contiguous runs of tiles (neighbouring tiles share reads and
        seams) whose sizes differ by at most one. With more chunks than tiles, the
        extra chunks are empty.
        """
        if chunks < 1:
            raise InputError(f"The number of chunks must be at least 1, found {chunks}")
        count = len(self.tiles)
        tiles = [replace(tile, chunk=(index * chunks) // count) for index, tile in enumerate(self.tiles)]
        return replace(self, chunks=chunks, tiles=tiles)

    def chunk(self, index: int) -> list[Tile]:
        """Return the tiles of one chunk; an index outside 0..chunks-1 is an error."""
        if not 0 <= index < self.chunks:
            raise InputError(
                f"Chunk index {index} is outside the tile plan of {self.slide_name}, "
                f"which has chunks 0-{self.chunks - 1}."
            )
        return [tile for tile in self.tiles if tile.chunk == index]

    def owner_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return the (row, col) grid cell whose core contains each level-0 point, as an (n, 2) array."""
        stride = self.tile_size_px - self.overlap_px
        return np.stack([np.floor_divide(y, stride), np.floor_divide(x, stride)], axis=1).astype(np.int64)

    # --- persistence -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        header = {key: value for key, value in asdict(self).items() if key != "tiles"}
        return {"format": PLAN_FORMAT, **header, "tiles": [asdict(tile) for tile in self.tiles]}

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> TilePlan:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"Tile plan not found: {path}. Create it with `shest qc SLIDE`, which writes SAMPLE.tiles.json.") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"Tile plan {path} is not valid JSON ({exc}); recreate it with `shest qc`.") from None
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise InputError(f"{path} is not a SHEST tile plan (format {found!r}, expected {PLAN_FORMAT!r}).")
        try:
            tiles = [Tile(**record) for record in data.pop("tiles")]
            data.pop("format")
            return cls(**data, tiles=tiles)
        except (KeyError, TypeError) as exc:
            raise InputError(
                f"Tile plan {path} has missing or unknown fields ({exc}); recreate it with `shest qc`."
            ) from None


def make_tile_plan(
    tissue_mask: np.ndarray,
    mask_downsample: float,
    slide_size: tuple[int, int],
    slide_mpp: float,
    slide_name: str,
    target_mpp: float = 0.5,
    tile_size_um: float = 512.0,
    overlap_um: float = 32.0,
    min_tissue_fraction: float = 0.0,
) -> TilePlan:
    """Plan tiles over the tissue of a slide.

    Parameters
    ----------
    tissue_mask
        Boolean mask of the whole slide at ``mask_downsample``.
    mask_downsample
        Level-0 pixels per mask pixel.
    slide_size
        Level-0 (width, height).
    slide_mpp
        Level-0 µm/px.
    target_mpp
        Resolution at which tiles will be processed; recorded in the plan and used to
        check that a tile is a sensible number of pixels.
    tile_size_um, overlap_um
        Tile side and the overlap between neighbouring tiles, in µm. The overlap must
        exceed the largest object that will be assigned by centroid (a nucleus is
        under 20 µm across).
    min_tissue_fraction
        Keep a tile only if more than this fraction of its core is tissue. The default
        0 keeps every core that touches tissue.
    """
    if tile_size_um <= 0 or overlap_um < 0:
        raise InputError(f"Tile size must be positive and overlap non-negative, found {tile_size_um} and {overlap_um} µm")
    if overlap_um >= tile_size_um:
        raise InputError(f"Tile overlap ({overlap_um} µm) must be smaller than the tile size ({tile_size_um} µm)")
    if target_mpp < slide_mpp * 0.999:
        raise InputError(
            f"Target resolution {target_mpp} µm/px is finer than the slide's {slide_mpp:.4f} µm/px; "
            "choose a target of at least the slide's pixel size."
        )
    tile_px = max(2, round(tile_size_um / slide_mpp))
    overlap_px = round(overlap_um / slide_mpp)
    overlap_px += overlap_px % 2  # even, so each side gets the same margin
    stride = tile_px - overlap_px
    if stride < 1:
        raise InputError(f"Tile size {tile_size_um} µm leaves no core once the {overlap_um} µm overlap is removed")
    if round(tile_px * slide_mpp / target_mpp) < 16:
        raise InputError(
            f"Tiles of {tile_size_um} µm are only {tile_px * slide_mpp / target_mpp:.0f} px at {target_mpp} µm/px; "
            "use a larger tile size."
        )

    width, height = slide_size
    min_side_px = MIN_SLIDE_SIDE_UM / slide_mpp
    if min(width, height) < min_side_px:
        raise InputError(
            f"{slide_name} is {width} x {height} px ({width * slide_mpp:.0f} x {height * slide_mpp:.0f} µm), "
            f"too small to segment: each side must be at least {MIN_SLIDE_SIDE_UM:.0f} µm. "
            "Check the µm/px (--mpp) if the image is larger than that on the glass."
        )
    plan = TilePlan(
        slide_name=slide_name,
        slide_width=int(width),
        slide_height=int(height),
        slide_mpp=float(slide_mpp),
        target_mpp=float(target_mpp),
        tile_size_um=float(tile_size_um),
        overlap_um=float(overlap_um),
        tile_size_px=int(tile_px),
        overlap_px=int(overlap_px),
    )

    if width <= tile_px and height <= tile_px:
        plan.warnings.append(
            f"{slide_name} ({width * slide_mpp:.0f} x {height * slide_mpp:.0f} µm) is smaller than one "
            f"{tile_size_um:g} µm tile: it is processed as a single tile."
        )

    mask = np.asarray(tissue_mask, dtype=bool)
    if not mask.any():
        plan.warnings.append(f"No tissue detected in {slide_name}: the tile plan is empty.")
        return plan

    rows = math.ceil(height / stride)
    cols = math.ceil(width / stride)
    # Tissue fraction of each core cell: integral image over the mask.
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    margin = overlap_px // 2
    tile_id = 0
    for row in range(rows):
        core_y0 = row * stride
        core_y1 = min(core_y0 + stride, height)
        for col in range(cols):
            core_x0 = col * stride
            core_x1 = min(core_x0 + stride, width)
            fraction = _mask_fraction(integral, mask.shape, mask_downsample, core_x0, core_y0, core_x1, core_y1)
            if fraction <= min_tissue_fraction:
                continue
            x0, y0 = max(core_x0 - margin, 0), max(core_y0 - margin, 0)
            x1, y1 = min(core_x1 + margin, width), min(core_y1 + margin, height)
            plan.tiles.append(
                Tile(
                    tile_id=tile_id, row=row, col=col,
                    x=x0, y=y0, width=x1 - x0, height=y1 - y0,
                    core_x0=core_x0, core_y0=core_y0, core_x1=core_x1, core_y1=core_y1,
                    tissue_fraction=round(fraction, 4),
                )
            )
            tile_id += 1
    if not plan.tiles:
        plan.warnings.append(
            f"No tile of {slide_name} has a tissue fraction above {min_tissue_fraction}: the tile plan is empty."
        )
    return plan


def _mask_fraction(integral, shape, downsample, x0, y0, x1, y1) -> float:
    """Fraction of mask pixels set inside a level-0 box, from the mask's integral image."""
    height, width = shape
    mx0 = min(max(int(math.floor(x0 / downsample)), 0), width)
    my0 = min(max(int(math.floor(y0 / downsample)), 0), height)
    mx1 = min(max(int(math.ceil(x1 / downsample)), mx0 + 1), width)
    my1 = min(max(int(math.ceil(y1 / downsample)), my0 + 1), height)
    if mx1 <= mx0 or my1 <= my0:
        return 0.0
    total = integral[my1, mx1] - integral[my0, mx1] - integral[my1, mx0] + integral[my0, mx0]
    return float(total) / float((mx1 - mx0) * (my1 - my0))
