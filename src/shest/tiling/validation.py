"""Field-by-field checks of a tile plan read from JSON.

Tile plans are plain JSON that users open, trim or split by hand, so a loaded plan is
checked before segmentation trusts it. Every field must have the right type and
range, and every tile must lie inside the slide. A tile's core must be the grid cell
that its row and column name, so that cores still partition the slide and every
nucleus has exactly one owner. Errors name the field and the tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from shest.errors import InputError

HEADER_INTEGERS = {"slide_width": 1, "slide_height": 1, "tile_size_px": 2, "overlap_px": 0, "chunks": 1}
HEADER_POSITIVE_FLOATS = ("slide_mpp", "target_mpp", "tile_size_um")
TILE_INTEGERS = {
    "tile_id": 0, "row": 0, "col": 0, "x": 0, "y": 0, "width": 1, "height": 1,
    "core_x0": 0, "core_y0": 0, "core_x1": 1, "core_y1": 1, "chunk": 0,
}
TILE_FIELDS = (*TILE_INTEGERS, "tissue_fraction")
# Fields of the plan's region, present from format version 2 on.
REGION_FIELDS = ("tissue", "roi")
FIX = "Recreate the plan with `shest qc`, or undo the hand edit."


@dataclass
class PlanFields:
    """The checked content of a plan file, ready for the ``TilePlan`` and ``Tile`` constructors."""

    header: dict[str, Any]
    tiles: list[dict[str, Any]]
    tissue: BaseGeometry | None
    roi: BaseGeometry | None


def validate_plan(data: dict[str, Any], source: str, version: int) -> PlanFields:
    """Check the fields of a tile plan document and return them with their Python types.

    Parameters
    ----------
    data
        The JSON object of the plan, without its ``format`` key.
    source
        The file name, for messages.
    version
        The plan format version; version 1 has no region fields.

    Raises
    ------
    InputError
        A field is missing, unknown, of the wrong type or out of range, a tile lies
        outside the slide, or two tiles share a core.
    """
    expected = {*HEADER_INTEGERS, *HEADER_POSITIVE_FLOATS, "slide_name", "overlap_um", "warnings", "tiles"}
    optional = set(REGION_FIELDS) if version >= 2 else set()
    _check_keys(data, expected, optional, f"Tile plan {source}")

    header: dict[str, Any] = {}
    name = data["slide_name"]
    if not isinstance(name, str) or not name:
        raise InputError(f"Tile plan {source}: field 'slide_name' must be a non-empty string, found {name!r}. {FIX}")
    header["slide_name"] = name
    for key, minimum in HEADER_INTEGERS.items():
        header[key] = _integer(data[key], minimum, f"Tile plan {source}: field '{key}'")
    for key in HEADER_POSITIVE_FLOATS:
        header[key] = _number(data[key], f"Tile plan {source}: field '{key}'", positive=True)
    header["overlap_um"] = _number(data["overlap_um"], f"Tile plan {source}: field 'overlap_um'", positive=False)
    if header["overlap_px"] >= header["tile_size_px"]:
        raise InputError(
            f"Tile plan {source}: field 'overlap_px' ({header['overlap_px']}) must be smaller than "
            f"'tile_size_px' ({header['tile_size_px']}). {FIX}"
        )
    warnings = data["warnings"]
    if not isinstance(warnings, list) or not all(isinstance(item, str) for item in warnings):
        raise InputError(f"Tile plan {source}: field 'warnings' must be a list of strings. {FIX}")
    header["warnings"] = list(warnings)

    records = data["tiles"]
    if not isinstance(records, list):
        raise InputError(f"Tile plan {source}: field 'tiles' must be a list, found {type(records).__name__}. {FIX}")
    tiles = [_validate_tile(record, index, header, source) for index, record in enumerate(records)]
    _check_unique(tiles, source)

    regions = {key: _region(data.get(key), f"Tile plan {source}: field '{key}'") for key in REGION_FIELDS}
    return PlanFields(header=header, tiles=tiles, tissue=regions["tissue"], roi=regions["roi"])


def _validate_tile(record: Any, index: int, header: dict[str, Any], source: str) -> dict[str, Any]:
    where = f"Tile plan {source}: tile {index}"
    if not isinstance(record, dict):
        raise InputError(f"{where} must be a JSON object, found {type(record).__name__}. {FIX}")
    _check_keys(record, set(TILE_FIELDS), set(), where)
    tile = {key: _integer(record[key], minimum, f"{where}, field '{key}'") for key, minimum in TILE_INTEGERS.items()}
    fraction = _number(record["tissue_fraction"], f"{where}, field 'tissue_fraction'", positive=False)
    if fraction > 1:
        raise InputError(f"{where}, field 'tissue_fraction' must lie between 0 and 1, found {fraction}. {FIX}")
    tile["tissue_fraction"] = fraction

    if tile["chunk"] >= header["chunks"]:
        raise InputError(
            f"{where}, field 'chunk' is {tile['chunk']}, but the plan has {header['chunks']} chunk(s), "
            f"numbered 0-{header['chunks'] - 1}. Change 'chunks' or the tile's chunk. {FIX}"
        )
    width, height = header["slide_width"], header["slide_height"]
    if tile["x"] + tile["width"] > width or tile["y"] + tile["height"] > height:
        raise InputError(
            f"{where}: its box x {tile['x']}, y {tile['y']}, width {tile['width']}, height {tile['height']} "
            f"extends beyond the {width} x {height} px slide. {FIX}"
        )

    # The core must be the grid cell named by row and col, clipped to the slide, so
    # that cores partition the slide and every nucleus has one owner.
    stride = header["tile_size_px"] - header["overlap_px"]
    expected_core = (
        tile["col"] * stride,
        tile["row"] * stride,
        min((tile["col"] + 1) * stride, width),
        min((tile["row"] + 1) * stride, height),
    )
    core = (tile["core_x0"], tile["core_y0"], tile["core_x1"], tile["core_y1"])
    if core != expected_core or expected_core[0] >= width or expected_core[1] >= height:
        raise InputError(
            f"{where}: fields 'core_x0', 'core_y0', 'core_x1', 'core_y1' are {list(core)}, but row {tile['row']} "
            f"and col {tile['col']} of this plan's grid ({stride} px cores) give {list(expected_core)}. {FIX}"
        )
    if not (tile["x"] <= core[0] and tile["y"] <= core[1]
            and core[2] <= tile["x"] + tile["width"] and core[3] <= tile["y"] + tile["height"]):
        raise InputError(
            f"{where}: its box x {tile['x']}, y {tile['y']}, width {tile['width']}, height {tile['height']} "
            f"does not contain its core {list(core)}. {FIX}"
        )
    return tile


def _check_unique(tiles: list[dict[str, Any]], source: str) -> None:
    seen_ids: dict[int, int] = {}
    seen_cells: dict[tuple[int, int], int] = {}
    for index, tile in enumerate(tiles):
        first = seen_ids.setdefault(tile["tile_id"], index)
        if first != index:
            raise InputError(
                f"Tile plan {source}: tiles {first} and {index} share field 'tile_id' {tile['tile_id']}; "
                f"tile ids must be unique. {FIX}"
            )
        cell = (tile["row"], tile["col"])
        first = seen_cells.setdefault(cell, index)
        if first != index:
            raise InputError(
                f"Tile plan {source}: tiles {first} and {index} both have row {cell[0]} and col {cell[1]}, "
                f"so their cores overlap and their nuclei would be counted twice. {FIX}"
            )


def _check_keys(record: dict[str, Any], expected: set[str], optional: set[str], where: str) -> None:
    missing = sorted(expected - set(record))
    unknown = sorted(set(record) - expected - optional)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing fields {missing}")
        if unknown:
            parts.append(f"unknown fields {unknown}")
        raise InputError(f"{where} has {' and '.join(parts)}. {FIX}")


def _integer(value: Any, minimum: int, where: str) -> int:
    # bool is an int in Python but never a valid count or coordinate here.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{where} must be an integer, found {value!r}. {FIX}")
    if value < minimum:
        raise InputError(f"{where} must be at least {minimum}, found {value}. {FIX}")
    return value


def _number(value: Any, where: str, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where} must be a number, found {value!r}. {FIX}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "positive" if positive else "at least 0"
        raise InputError(f"{where} must be a finite number, {bound}, found {value}. {FIX}")
    return value


def _region(value: Any, where: str) -> BaseGeometry | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{where} must be WKT text (level-0 pixels) or null, found {type(value).__name__}. {FIX}")
    try:
        geometry = shapely.from_wkt(value)
    except shapely.errors.ShapelyError as exc:
        raise InputError(f"{where} is not valid WKT ({exc}). {FIX}") from None
    if not isinstance(geometry, (Polygon, MultiPolygon)):
        raise InputError(f"{where} must be a POLYGON or MULTIPOLYGON, found {geometry.geom_type}. {FIX}")
    return geometry
