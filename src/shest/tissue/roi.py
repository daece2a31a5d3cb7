"""Regions of interest drawn in QuPath (or any GeoJSON editor) that restrict tissue detection."""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.ops import unary_union
from skimage.draw import polygon as fill_polygon

from shest.errors import InputError

log = logging.getLogger(__name__)


def load_roi(path: str | os.PathLike) -> Polygon | MultiPolygon:
    """Read the polygons of a GeoJSON file in level-0 pixel coordinates and return their union.

    Accepts a FeatureCollection, a single Feature, a bare geometry, or a JSON list of
    features (older QuPath exports), optionally gzipped (``.gz``). Polygon and
    MultiPolygon geometries are used; points and lines are ignored with a debug
    message. Invalid polygons, such as a freehand outline that crosses itself, are
    repaired with ``shapely.make_valid``, which keeps every enclosed area.

    Raises
    ------
    InputError
        The file is missing, not JSON, or contains no polygon.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                data = json.load(handle)
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"ROI file not found: {path}. Pass a GeoJSON file of polygons with --roi.") from None
    except (json.JSONDecodeError, UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise InputError(f"ROI file {path} is not valid GeoJSON ({exc}); export the annotations as GeoJSON.") from None

    polygons: list[Polygon] = []
    skipped = 0
    for geometry in _geometries(data):
        try:
            geom = shape(geometry)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"ROI file {path} has an invalid geometry ({exc}).") from None
        if isinstance(geom, Polygon):
            polygons.append(geom)
        elif isinstance(geom, MultiPolygon):
            polygons.extend(geom.geoms)
        else:
            skipped += 1
    if skipped:
        log.debug("%s: ignored %d non-polygon geometries", path, skipped)
    polygons = [part for p in polygons if not p.is_empty for part in _valid_polygons(p, path)]
    if not polygons:
        raise InputError(
            f"ROI file {path} contains no polygon. Draw the region as a polygon or rectangle annotation "
            "and export it as GeoJSON in level-0 pixel coordinates."
        )
    return unary_union(polygons)


def _valid_polygons(polygon: Polygon, path: Path) -> list[Polygon]:
    """Return ``polygon`` as valid polygons, repaired with ``shapely.make_valid`` when needed.

    ``buffer(0)`` would drop one lobe of a bow-tie outline, while ``make_valid`` keeps
    both; lines and points left over by the repair are dropped.
    """
    if polygon.is_valid:
        return [polygon]
    log.warning("%s: a polygon is invalid (%s); repaired, keeping every enclosed area", path.name,
                shapely.is_valid_reason(polygon))  # fmt: skip
    repaired = shapely.make_valid(polygon)
    parts = shapely.get_parts(repaired)
    polygons: list[Polygon] = []
    for part in parts:
        if isinstance(part, Polygon) and not part.is_empty:
            polygons.append(part)
        elif isinstance(part, MultiPolygon):
            polygons.extend(part.geoms)
    return polygons


def _geometries(data: Any):
    """Yield GeoJSON geometry objects from any of the accepted document shapes."""
    if isinstance(data, list):
        for item in data:
            yield from _geometries(item)
        return
    if not isinstance(data, dict):
        return
    kind = data.get("type")
    if kind == "FeatureCollection":
        for item in data.get("features") or []:
            yield from _geometries(item)
    elif kind == "Feature":
        if data.get("geometry"):
            yield data["geometry"]
    elif kind == "GeometryCollection":
        for item in data.get("geometries") or []:
            yield item
    elif kind is not None:
        yield data


def rasterize_roi(
    roi: Polygon | MultiPolygon,
    shape_rc: tuple[int, int],
    downsample_x: float,
    downsample_y: float,
) -> np.ndarray:
    """Return a boolean mask of ``shape_rc`` (rows, cols) that is True inside ``roi``.

    A mask pixel is inside when its centre, mapped to level 0 as
    ``((col + 0.5) * downsample_x, (row + 0.5) * downsample_y)``, lies inside a
    polygon and outside its holes.
    """
    mask = np.zeros(shape_rc, dtype=bool)
    parts = roi.geoms if isinstance(roi, MultiPolygon) else [roi]
    for part in parts:
        if part.is_empty:
            continue
        inside = np.zeros(shape_rc, dtype=bool)
        rows, cols = _ring_pixels(part.exterior.coords, shape_rc, downsample_x, downsample_y)
        inside[rows, cols] = True
        for hole in part.interiors:
            rows, cols = _ring_pixels(hole.coords, shape_rc, downsample_x, downsample_y)
            inside[rows, cols] = False
        mask |= inside
    return mask


def _ring_pixels(coords, shape_rc, downsample_x, downsample_y):
    xy = np.asarray(coords, dtype=np.float64)
    cols = xy[:, 0] / downsample_x - 0.5
    rows = xy[:, 1] / downsample_y - 0.5
    return fill_polygon(rows, cols, shape=shape_rc)
