"""Per-nucleus measurements and outlines from a label image, in level-0 coordinates.

Coordinates are continuous level-0 pixel coordinates, the convention QuPath uses:
the pixel with index (column i, row j) covers [i, i + 1) x [j, j + 1), so its centre
is (i + 0.5, j + 0.5). A label image of a tile read at ``scale`` image pixels per
level-0 pixel, whose top-left corner is level-0 (x0, y0), maps a continuous
coordinate u of the label image to ``x0 + u / scale``.

Measurements (scikit-image definitions where one exists):

- centroid, area and bounding box of the label's pixels;
- eccentricity of the ellipse with the same second central moments;
- perimeter: length of the traced outline before simplification;
- solidity: area of the traced outline over the area of its convex hull;
- hematoxylin OD: mean over the label's pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely
from scipy import ndimage as ndi
from skimage.measure import find_contours

# Outline vertices are rounded to this many decimals of a level-0 pixel, the same
# precision the GeoJSON output uses, so Parquet and GeoJSON hold identical outlines.
COORDINATE_DECIMALS = 2
# Douglas-Peucker tolerance for outlines, in pixels of the segmented image. A quarter
# pixel keeps every vertex within the staircase of the mask while dropping the
# collinear vertices marching squares produces along straight runs.
SIMPLIFY_TOLERANCE_PX = 0.25

MEASUREMENT_COLUMNS = (
    "x", "y", "x_um", "y_um", "area_um2", "perimeter_um", "eccentricity", "solidity",
    "hematoxylin_od", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1",
)

KeepFunction = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TileGeometry:
    """Position and scale of a segmented image on the slide.

    Attributes
    ----------
    x0, y0
        Level-0 position of the image's top-left corner.
    scale_x, scale_y
        Image pixels per level-0 pixel along x and y.
    slide_mpp
        Level-0 µm/px of the slide.
    """

    x0: float
    y0: float
    scale_x: float
    scale_y: float
    slide_mpp: float

    @property
    def image_mpp(self) -> float:
        """µm/px of the segmented image (mean of x and y)."""
        return self.slide_mpp * 2.0 / (self.scale_x + self.scale_y)

    def to_level0(self, col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map continuous image coordinates (x = column, y = row) to level-0 pixels."""
        return self.x0 + np.asarray(col) / self.scale_x, self.y0 + np.asarray(row) / self.scale_y


def empty_measurements() -> dict[str, np.ndarray]:
    """Return the columns of :func:`measure_nuclei` with no rows."""
    columns = {name: np.empty(0, dtype=np.float64) for name in MEASUREMENT_COLUMNS}
    columns["label"] = np.empty(0, dtype=np.int64)
    columns["geometry"] = np.empty(0, dtype=object)
    return columns


def measure_nuclei(
    labels: np.ndarray,
    hematoxylin: np.ndarray,
    geometry: TileGeometry,
    keep: KeepFunction | None = None,
) -> dict[str, np.ndarray]:
    """Measure every labelled nucleus and trace its outline.

    Parameters
    ----------
    labels
        int label image at the segmentation resolution (0 = background), with
        labels numbered 1..n.
    hematoxylin
        Hematoxylin OD image of the same shape.
    geometry
        Position and scale of the image on the slide.
    keep
        Selection of the nuclei to measure. It gets arrays of the level-0 centroids
        x and y and an (n, 4) bool array that flags which nuclei touch the image's
        left, top, right and bottom edges, and returns a bool array. Nuclei it
        rejects are dropped before their outlines are traced.

    Returns
    -------
    dict
        One float64 array per column of :data:`MEASUREMENT_COLUMNS`, plus ``label``
        (the id in ``labels``) and ``geometry`` (shapely Polygons, level-0 px).
        Nuclei whose outline has no area after simplification are left out.
    """
    count = int(labels.max()) if labels.size else 0
    if count == 0:
        return empty_measurements()
    height, width = labels.shape
    mpp = geometry.image_mpp

    flat = labels.ravel()
    pixels = np.flatnonzero(flat)
    ids = flat[pixels]
    rows = (pixels // width).astype(np.float64)
    cols = (pixels % width).astype(np.float64)
    area = np.bincount(ids, minlength=count + 1)[1:].astype(np.float64)
    present = area > 0
    safe_area = np.where(present, area, 1.0)

    def mean_of(values: np.ndarray) -> np.ndarray:
        return np.bincount(ids, weights=values, minlength=count + 1)[1:] / safe_area

    mean_row, mean_col = mean_of(rows), mean_of(cols)
    var_row = mean_of(rows * rows) - mean_row**2
    var_col = mean_of(cols * cols) - mean_col**2
    cov = mean_of(rows * cols) - mean_row * mean_col
    eccentricity = _eccentricity(var_row, var_col, cov)
    hematoxylin_mean = mean_of(hematoxylin.ravel()[pixels].astype(np.float64))

    boxes = ndi.find_objects(labels, max_label=count)
    bbox = np.array([(b[0].start, b[1].start, b[0].stop, b[1].stop) if b else (0, 0, 0, 0) for b in boxes], dtype=np.int64)
    # +0.5: pixel-index centroids to continuous coordinates.
    x, y = geometry.to_level0(mean_col + 0.5, mean_row + 0.5)
    touches = np.column_stack([bbox[:, 1] == 0, bbox[:, 0] == 0, bbox[:, 3] == width, bbox[:, 2] == height])
    selected = present.copy()
    if keep is not None:
        selected &= np.asarray(keep(x, y, touches), dtype=bool)
    chosen = np.flatnonzero(selected)

    polygons, perimeter_px, solidity = trace_outlines(labels, chosen + 1, bbox[chosen], geometry)
    traced = np.array([polygon is not None for polygon in polygons], dtype=bool)
    chosen = chosen[traced]

    bx0, by0 = geometry.to_level0(bbox[chosen, 1], bbox[chosen, 0])
    bx1, by1 = geometry.to_level0(bbox[chosen, 3], bbox[chosen, 2])
    return {
        "x": x[chosen],
        "y": y[chosen],
        "x_um": x[chosen] * geometry.slide_mpp,
        "y_um": y[chosen] * geometry.slide_mpp,
        "area_um2": area[chosen] * mpp * mpp,
        "perimeter_um": perimeter_px[traced] * mpp,
        "eccentricity": eccentricity[chosen],
        "solidity": solidity[traced],
        "hematoxylin_od": hematoxylin_mean[chosen],
        "bbox_x0": np.asarray(bx0, dtype=np.float64),
        "bbox_y0": np.asarray(by0, dtype=np.float64),
        "bbox_x1": np.asarray(bx1, dtype=np.float64),
        "bbox_y1": np.asarray(by1, dtype=np.float64),
        "label": (chosen + 1).astype(np.int64),
        "geometry": np.asarray([polygon for polygon in polygons if polygon is not None] or [], dtype=object),
    }


def _eccentricity(var_row: np.ndarray, var_col: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Eccentricity of the ellipse with the given second central moments (scikit-image definition)."""
    half_trace = (var_row + var_col) / 2.0
    spread = np.sqrt(np.maximum(((var_row - var_col) / 2.0) ** 2 + cov**2, 0.0))
    major = half_trace + spread
    minor = np.maximum(half_trace - spread, 0.0)
    return np.where(major > 0, np.sqrt(np.clip(1.0 - minor / np.where(major > 0, major, 1.0), 0.0, 1.0)), 0.0)


def trace_outlines(
    labels: np.ndarray, label_ids: np.ndarray, boxes: np.ndarray, geometry: TileGeometry
) -> tuple[list[shapely.Polygon | None], np.ndarray, np.ndarray]:
    """Trace, simplify and map to level 0 the outlines of the given labels.

    Each outline is the marching-squares contour at level 0.5 of the label's mask,
    so it runs through the midpoints between inside and outside pixel centres. A
    label in several pieces gets the outline of its largest piece.

    Parameters
    ----------
    labels
        Label image.
    label_ids
        Labels to trace.
    boxes
        Their bounding boxes as (min_row, min_col, max_row, max_col).
    geometry
        Position and scale of the label image on the slide.

    Returns
    -------
    polygons
        Level-0 polygons, ``None`` where the simplified outline has no area.
    perimeter_px
        Length of each unsimplified outline in image pixels (only for traced outlines).
    solidity
        Outline area over its convex hull's area (only for traced outlines).
    """
    height, width = labels.shape
    rings: list[np.ndarray] = []
    for label_id, (row0, col0, row1, col1) in zip(label_ids, boxes):
        top, left = max(row0 - 1, 0), max(col0 - 1, 0)
        crop = labels[top : min(row1 + 1, height), left : min(col1 + 1, width)] == label_id
        # Zero padding closes contours of labels that touch the image edge.
        padded = np.pad(crop, 1).astype(np.float32)
        contours = find_contours(padded, 0.5)
        contour = max(contours, key=len) if contours else np.empty((0, 2))
        # (row, col) of the padded crop -> continuous (x, y) of the label image.
        rings.append(np.column_stack([contour[:, 1] + left - 0.5, contour[:, 0] + top - 0.5]))

    polygons: list[shapely.Polygon | None] = []
    perimeters: list[float] = []
    solidities: list[float] = []
    for ring in rings:
        polygon = _ring_to_polygon(ring)
        if polygon is None:
            polygons.append(None)
            continue
        outline = polygon
        # Plain Douglas-Peucker is several times faster than the topology-preserving
        # variant; the rare self-intersection it makes is repaired in _to_level0.
        simplified = polygon.simplify(SIMPLIFY_TOLERANCE_PX, preserve_topology=False)
        if simplified.is_empty:
            simplified = polygon
        level0 = _to_level0(simplified, geometry)
        if level0 is None:
            polygons.append(None)
            continue
        polygons.append(level0)
        perimeters.append(outline.length)
        hull_area = outline.convex_hull.area
        solidities.append(outline.area / hull_area if hull_area > 0 else 0.0)
    return polygons, np.asarray(perimeters, dtype=np.float64), np.asarray(solidities, dtype=np.float64)


def _ring_to_polygon(ring: np.ndarray) -> shapely.Polygon | None:
    if len(ring) < 4:
        return None
    polygon = shapely.Polygon(ring)
    if not polygon.is_valid:
        polygon = _largest_part(shapely.make_valid(polygon))
    if polygon is None or polygon.area <= 0:
        return None
    return polygon


def _to_level0(polygon: shapely.Polygon, geometry: TileGeometry) -> shapely.Polygon | None:
    """Map an image-coordinate polygon to level 0, rounded to :data:`COORDINATE_DECIMALS`."""
    ring = np.asarray(polygon.exterior.coords)
    x, y = geometry.to_level0(ring[:, 0], ring[:, 1])
    mapped = shapely.Polygon(np.round(np.column_stack([x, y]), COORDINATE_DECIMALS))
    if not mapped.is_valid:
        # Simplification or rounding can pinch a thin neck into a self-touching ring.
        mapped = _largest_part(shapely.make_valid(mapped))
    if mapped is None or mapped.area <= 0:
        return None
    orient = getattr(shapely, "orient_polygons", None)
    return orient(mapped) if orient is not None else mapped


def _largest_part(geometry) -> shapely.Polygon | None:
    """Return the exterior of the largest polygon in a geometry, or None."""
    parts = [part for part in getattr(geometry, "geoms", [geometry]) if isinstance(part, shapely.Polygon)]
    if not parts:
        return None
    largest = max(parts, key=lambda part: part.area)
    return shapely.Polygon(largest.exterior)


def filter_label_areas(labels: np.ndarray, min_px: float, max_px: float) -> np.ndarray:
    """Drop labels outside [min_px, max_px] pixels and renumber the rest 1..n in scan order."""
    sizes = np.bincount(labels.ravel())
    keep = (sizes >= min_px) & (sizes <= max_px)
    keep[0] = False
    new_ids = np.zeros(len(sizes), dtype=np.int32)
    new_ids[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_ids[labels]
