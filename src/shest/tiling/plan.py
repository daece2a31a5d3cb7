"""Tile plans over tissue, with core regions that partition the slide.

The slide is cut into a grid of *core* cells of side ``tile_size - overlap`` (level-0
pixels). Each tile is its core grown by half the overlap on every side and clipped to
the slide. Cores never overlap and cover the whole grid, so an object is owned by
exactly one tile: the one whose core contains its centroid. As long as the overlap is
larger than the largest object, every owned object lies whole inside its tile.

A plan is saved as JSON: the parameters, the slide it was made for and one record per
tile. From format version 2 on, it also stores the region whose nuclei segmentation
keeps, as WKT in level-0 pixels: the tissue polygons of slide QC and the polygons of a
region of interest. ``chunk`` numbers split the tiles into contiguous, equally sized groups
for scatter across cluster jobs. Plans are checked field by field when loaded
(:mod:`shest.tiling.validation`), because users edit them by hand.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from shest.errors import InputError
from shest.io.atomic import atomic_path
from shest.tiling.validation import validate_plan

PLAN_FORMAT = "shest-tile-plan/2"
# Formats that load, by version. Version 1 plans have no region and keep every nucleus.
READABLE_FORMATS = {"shest-tile-plan/1": 1, PLAN_FORMAT: 2}
# Smallest slide side worth segmenting: a few cell windows (16 µm each) across.
MIN_SLIDE_SIDE_UM = 64.0
# Largest tile side at the target resolution. Segmentation keeps several images of a
# tile in memory at once (RGB, float hematoxylin, labels), about 40 bytes per pixel.
MAX_TILE_PX = 8192
# Coarsest target resolution: nuclei of 5-10 µm are under 5 px across beyond it.
MAX_TARGET_MPP = 2.0
# Level-0 pixel coordinates of the region polygons are stored with this many decimals.
REGION_DECIMALS = 2


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
    tissue: BaseGeometry | None = None
    """Tissue polygons of slide QC (level-0 px); nuclei outside them are dropped. None keeps all."""
    roi: BaseGeometry | None = None
    """Region of interest (level-0 px); nuclei outside it are dropped. None keeps all."""

    def __post_init__(self) -> None:
        self.tissue = _stored_region(self.tissue)
        self.roi = _stored_region(self.roi)

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
                f"--chunk {index} is outside the tile plan of {self.slide_name}, "
                f"which has chunks 0-{self.chunks - 1}."
            )
        return [tile for tile in self.tiles if tile.chunk == index]

    def owner_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return the (row, col) grid cell whose core contains each level-0 point, as an (n, 2) array."""
        stride = self.tile_size_px - self.overlap_px
        return np.stack([np.floor_divide(y, stride), np.floor_divide(x, stride)], axis=1).astype(np.int64)

    @property
    def has_region(self) -> bool:
        """Whether the plan restricts nuclei to its tissue or region-of-interest polygons."""
        return self.tissue is not None or self.roi is not None

    def in_region(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return whether level-0 points lie inside the tissue and the ROI (boundaries count as inside).

        A plan without tissue or ROI polygons (format version 1) contains every point.
        """
        inside = np.ones(np.shape(x), dtype=bool)
        for geometry in (self.tissue, self.roi):
            if geometry is not None:
                shapely.prepare(geometry)
                inside &= shapely.intersects_xy(geometry, x, y)
        return inside

    # --- persistence -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        regions = ("tissue", "roi")
        header = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("tiles", *regions)}
        header["warnings"] = list(self.warnings)
        stored = {name: _region_wkt(getattr(self, name)) for name in regions}
        return {"format": PLAN_FORMAT, **header, **stored, "tiles": [asdict(tile) for tile in self.tiles]}

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> TilePlan:
        """Read a plan written by :meth:`save` (format version 1 or 2) and check every field.

        Raises
        ------
        InputError
            The file is missing, not JSON, not a tile plan, or a field is missing,
            unknown or invalid (the message names the field and the tile).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"Tile plan not found: {path}. Create it with `shest qc SLIDE`, which writes SAMPLE.tiles.json.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"Tile plan {path} is not valid JSON ({exc}); recreate it with `shest qc`.") from None
        found = data.get("format") if isinstance(data, dict) else None
        if found not in READABLE_FORMATS:
            expected = " or ".join(repr(name) for name in READABLE_FORMATS)
            raise InputError(f"{path} is not a SHEST tile plan (format {found!r}, expected {expected}).")
        data = {key: value for key, value in data.items() if key != "format"}
        checked = validate_plan(data, str(path), READABLE_FORMATS[found])
        tiles = [Tile(**record) for record in checked.tiles]
        return cls(**checked.header, tiles=tiles, tissue=checked.tissue, roi=checked.roi)


def _stored_region(geometry: BaseGeometry | None) -> BaseGeometry | None:
    """Return the geometry as it reads back from a saved plan (coordinates rounded), so saving loses nothing."""
    if geometry is None:
        return None
    return shapely.from_wkt(_region_wkt(geometry))


def _region_wkt(geometry: BaseGeometry | None) -> str | None:
    if geometry is None:
        return None
    return shapely.to_wkt(geometry, rounding_precision=REGION_DECIMALS, trim=True)


def check_plan_parameters(target_mpp: float, tile_size_um: float, overlap_um: float) -> None:
    """Check the plan parameters that do not depend on the slide.

    Raises
    ------
    InputError
        A value is not finite or out of range; the message names the ``shest qc``
        option that sets it.
    """
    for option, value in (("--target-mpp", target_mpp), ("--tile-size-um", tile_size_um), ("--overlap-um", overlap_um)):
        if not math.isfinite(value):
            raise InputError(f"{option} must be a finite number, found {value}.")
    if tile_size_um <= 0:
        raise InputError(f"--tile-size-um must be positive, found {tile_size_um}.")
    if overlap_um < 0:
        raise InputError(f"--overlap-um must be non-negative, found {overlap_um}.")
    if overlap_um >= tile_size_um:
        raise InputError(
            f"--overlap-um ({overlap_um:g} µm) must be smaller than the tile size, --tile-size-um ({tile_size_um:g} µm)."
        )
    if not 0 < target_mpp <= MAX_TARGET_MPP:
        raise InputError(
            f"--target-mpp {target_mpp:g} is outside (0, {MAX_TARGET_MPP:g}] µm/px: nuclei of 5-10 µm are under "
            "5 px across at coarser resolutions. Segment at 0.5 µm/px (the default) or at the slide's own pixel size."
        )
    target_tile_px = tile_size_um / target_mpp
    if target_tile_px > MAX_TILE_PX:
        raise InputError(
            f"--tile-size-um {tile_size_um:g} gives tiles of {target_tile_px:.0f} px at --target-mpp {target_mpp:g}; "
            f"the limit is {MAX_TILE_PX} px ({MAX_TILE_PX * target_mpp:g} µm at that resolution), because "
            "segmentation holds several copies of a tile in memory. Use a smaller --tile-size-um."
        )


def check_target_mpp(target_mpp: float, slide_mpp: float) -> None:
    """Raise InputError when the target resolution is finer than the slide's pixel size."""
    if target_mpp < slide_mpp * 0.999:
        raise InputError(
            f"--target-mpp {target_mpp:g} is finer than the slide's {slide_mpp:.4f} µm/px (from the file or --mpp); "
            f"pass --target-mpp {math.ceil(slide_mpp * 1000) / 1000:g} or larger."
        )


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
    tissue: BaseGeometry | None = None,
    roi: BaseGeometry | None = None,
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
        Resolution at which tiles will be processed, at most :data:`MAX_TARGET_MPP`.
        It is recorded in the plan and used to check that a tile is a sensible number
        of pixels.
    tile_size_um, overlap_um
        Tile side and the overlap between neighbouring tiles, in µm. The overlap must
        exceed the largest object that will be assigned by centroid (a nucleus is
        under 20 µm across). A tile may be at most :data:`MAX_TILE_PX` at ``target_mpp``.
    min_tissue_fraction
        Keep a tile only if more than this fraction of its core is tissue. The default
        0 keeps every core that touches tissue.
    tissue, roi
        Optional polygons in level-0 pixels, stored in the plan: segmentation keeps
        only the nuclei whose centroid lies inside both.

    Raises
    ------
    InputError
        A parameter is not finite or out of range; messages name the ``shest qc``
        option that sets it.
    """
    check_plan_parameters(target_mpp, tile_size_um, overlap_um)
    check_target_mpp(target_mpp, slide_mpp)
    tile_px = max(2, round(tile_size_um / slide_mpp))
    overlap_px = round(overlap_um / slide_mpp)
    overlap_px += overlap_px % 2  # even, so each side gets the same margin
    stride = tile_px - overlap_px
    if stride < 1:
        raise InputError(
            f"--tile-size-um {tile_size_um:g} leaves no core once the --overlap-um {overlap_um:g} overlap is removed; "
            "use a larger tile size or a smaller overlap."
        )
    if round(tile_px * slide_mpp / target_mpp) < 16:
        raise InputError(
            f"--tile-size-um {tile_size_um:g} gives tiles of only {tile_px * slide_mpp / target_mpp:.0f} px at "
            f"--target-mpp {target_mpp:g}; use a larger tile size (at least 16 px)."
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
        tissue=tissue,
        roi=roi,
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
