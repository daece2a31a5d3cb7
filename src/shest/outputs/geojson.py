"""Cell GeoJSON for QuPath and geopandas: nucleus outlines with predicted cell types.

Each Feature follows QuPath's GeoJSON conventions (QuPath 0.4 and later):

- ``id``: a UUID, derived from the sample and ``cell_id`` so reruns give the same ids;
- ``geometry``: the nucleus outline in level-0 pixels;
- ``nucleusGeometry`` (cells only): the same outline, so QuPath creates a cell whose
  nucleus is known;
- ``properties.objectType``: ``"cell"`` (default) or ``"detection"``;
- ``properties.classification``: ``{"name": ..., "color": [r, g, b]}``; cells below the
  probability cutoff get the class ``Unassigned`` in grey. In a demo run every name
  ends in `` (demo)`` (``Tumor (demo)``), so QuPath's class list shows that the
  predictions are not biological;
- ``properties.measurements``: a name-to-number object (probability, area, shape).

Extra properties (``cell_id``, ``cell_type`` with the predicted type even when
unassigned, ``unassigned``, ``demo``) are ignored by QuPath and read by geopandas.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import shapely

from shest.io.geojson import feature, polygon_geometry, write_feature_collection
from shest.model.constants import UNASSIGNED_COLOR, UNASSIGNED_NAME

OBJECT_TYPES = ("cell", "detection")
MEASUREMENT_COLUMNS = ("area_um2", "perimeter_um", "eccentricity", "solidity", "hematoxylin_od")
DEMO_SUFFIX = " (demo)"
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/recognizability/shest/cells")


def hex_to_rgb(color: str) -> list[int]:
    """Convert ``#rrggbb`` to the ``[r, g, b]`` integer list QuPath reads."""
    text = color.lstrip("#")
    return [int(text[i : i + 2], 16) for i in (0, 2, 4)]


def cell_uuid(sample: str, cell_id: int) -> str:
    """Return the stable UUID of a cell (UUID 5 of the sample and cell id)."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{sample}/{int(cell_id)}"))


def iter_cell_features(
    cells: pd.DataFrame,
    class_index: np.ndarray,
    probability: np.ndarray,
    classes: Sequence[str],
    colors: Sequence[str],
    probability_cutoff: float,
    sample: str,
    demo: bool,
    object_type: str = "cell",
) -> Iterator[dict[str, Any]]:
    """Yield one GeoJSON Feature per cell; ``cells`` contains ``cell_id``, ``geometry`` and measurements."""
    if object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {OBJECT_TYPES}, found {object_type!r}")
    suffix = DEMO_SUFFIX if demo else ""
    classifications = [{"name": name + suffix, "color": hex_to_rgb(color)} for name, color in zip(classes, colors)]
    unassigned_class = {"name": UNASSIGNED_NAME + suffix, "color": hex_to_rgb(UNASSIGNED_COLOR)}
    measurement_columns = [column for column in MEASUREMENT_COLUMNS if column in cells.columns]
    measurement_values = {column: cells[column].to_numpy(dtype=np.float64) for column in measurement_columns}
    cell_ids = cells["cell_id"].to_numpy(dtype=np.int64)
    geometries = cells["geometry"].to_numpy()

    for row in range(len(cells)):
        klass = int(class_index[row])
        prob = float(probability[row])
        unassigned = prob < probability_cutoff
        geometry = _geometry_json(geometries[row])
        measurements = {"cell_type_probability": round(prob, 5)}
        for column in measurement_columns:
            value = float(measurement_values[column][row])
            if math.isfinite(value):
                measurements[column] = round(value, 5)
        properties = {
            "objectType": object_type,
            "classification": unassigned_class if unassigned else classifications[klass],
            "measurements": measurements,
            "cell_id": int(cell_ids[row]),
            "cell_type": classes[klass],
            "unassigned": bool(unassigned),
            "demo": bool(demo),
        }
        item = feature(geometry, properties, feature_id=cell_uuid(sample, cell_ids[row]))
        if object_type == "cell":
            item["nucleusGeometry"] = geometry
        yield item


def write_cells_geojson(
    path: str | os.PathLike,
    cells: pd.DataFrame,
    class_index: np.ndarray,
    probability: np.ndarray,
    classes: Sequence[str],
    colors: Sequence[str],
    probability_cutoff: float,
    sample: str,
    demo: bool,
    metadata: dict[str, Any],
    object_type: str = "cell",
) -> int:
    """Stream the cell Features into a FeatureCollection at ``path``; return the number written."""
    features = iter_cell_features(
        cells, class_index, probability, classes, colors, probability_cutoff, sample, demo, object_type
    )
    return write_feature_collection(path, features, metadata={**metadata, "demo": bool(demo)})


def _geometry_json(geometry) -> dict[str, Any]:
    if shapely.get_type_id(geometry) == 3 and not geometry.interiors:
        return polygon_geometry(np.asarray(geometry.exterior.coords)[:, :2])
    return shapely.geometry.mapping(shapely.set_precision(geometry, 0.01))
