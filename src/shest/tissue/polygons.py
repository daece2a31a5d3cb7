"""Tissue masks as polygons in level-0 pixels, and their GeoJSON annotations for QuPath."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping
from shapely.geometry.polygon import orient
from skimage.measure import find_contours, label, regionprops

from shest.io.geojson import feature, write_feature_collection

TISSUE_CLASS = {"name": "Tissue", "color": [0, 160, 0]}


def mask_polygons(
    mask: np.ndarray,
    downsample_x: float,
    downsample_y: float,
    simplify_px: float = 0.3,
) -> list[Polygon]:
    """Trace each 4-connected piece of a mask as a polygon with holes, in level-0 pixels.

    Mask pixel (row, col) covers level-0 x from ``col * downsample_x`` to
    ``(col + 1) * downsample_x``; outlines follow the pixel edges through their
    midpoints (marching squares at level 0.5). Outlines are simplified by
    ``simplify_px`` mask pixels before scaling. A value below 0.5 drops collinear
    points but keeps one-pixel steps, whose corners lie 0.5 px off the straight
    edge. Polygons are ordered by their top edge, then their left edge.
    """
    polygons: list[Polygon] = []
    labels = label(mask, connectivity=1)
    for region in regionprops(labels):
        min_row, min_col = region.bbox[:2]
        padded = np.pad(region.image, 1).astype(np.float32)
        rings = []
        for contour in find_contours(padded, 0.5):
            if len(contour) < 4:
                continue
            # contour is (row, col) in the padded crop; shift to mask pixel-centre coordinates.
            cols = contour[:, 1] - 1 + min_col
            rows = contour[:, 0] - 1 + min_row
            ring = Polygon(np.column_stack([cols, rows]))
            if ring.area > 0:
                rings.append(ring)
        if not rings:
            continue
        rings.sort(key=lambda ring: ring.area, reverse=True)
        outer, holes = rings[0], rings[1:]
        shell = Polygon(outer.exterior.coords, [hole.exterior.coords for hole in holes])
        if simplify_px > 0:
            shell = shell.simplify(simplify_px, preserve_topology=True)
        for part in _polygon_parts(shell):
            polygons.append(_to_level0(part, downsample_x, downsample_y))
    polygons.sort(key=lambda polygon: (polygon.bounds[1], polygon.bounds[0]))
    return polygons


def _polygon_parts(geometry) -> list[Polygon]:
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    if isinstance(geometry, Polygon):
        return [geometry] if not geometry.is_empty else []
    if isinstance(geometry, MultiPolygon):
        return [part for part in geometry.geoms if not part.is_empty]
    return [part for part in getattr(geometry, "geoms", []) if isinstance(part, Polygon) and not part.is_empty]


def _to_level0(polygon: Polygon, downsample_x: float, downsample_y: float) -> Polygon:
    # The 0.5 shift moves from pixel-centre to pixel-edge coordinates before scaling.
    scaled = shapely.transform(polygon, lambda xy: (xy + 0.5) * np.array([downsample_x, downsample_y]))
    return orient(scaled, sign=1.0)


def tissue_features(polygons: list[Polygon], mpp_x: float, mpp_y: float, decimals: int = 1) -> list[dict[str, Any]]:
    """Return one QuPath annotation Feature per polygon, with its area in mm²."""
    features = []
    for index, polygon in enumerate(polygons, start=1):
        geometry = mapping(shapely.set_precision(polygon, 10.0**-decimals))
        area_mm2 = polygon.area * mpp_x * mpp_y / 1e6
        properties = {
            "objectType": "annotation",
            "name": f"Tissue {index}",
            "classification": dict(TISSUE_CLASS),
            "isLocked": False,
            "measurements": {"Area mm^2": round(area_mm2, 6)},
        }
        # No feature id: QuPath expects a UUID there and assigns one on import.
        features.append(feature(geometry, properties))
    return features


def write_tissue_geojson(
    path: str | os.PathLike,
    polygons: list[Polygon],
    mpp_x: float,
    mpp_y: float,
    metadata: Mapping[str, Any] | None = None,
) -> int:
    """Write tissue polygons as a GeoJSON FeatureCollection of annotations; return the count."""
    return write_feature_collection(path, tissue_features(polygons, mpp_x, mpp_y), metadata=metadata)
