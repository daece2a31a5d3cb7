"""The cell table: one row per nucleus, stored as GeoParquet.

Columns are listed in :data:`COLUMNS` (see docs/architecture.md). The Parquet schema
metadata key ``shest`` contains JSON describing the sample, slide, resolution, backend,
parameters and calibration. Rows are sorted by ``y``, then ``x`` (ties broken by the
other columns), and ``cell_id`` numbers them from 1 in that order, so the same
nuclei always give the same ids and the same bytes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shest.errors import InputError
from shest.io.atomic import atomic_path
from shest.segmentation.features import MEASUREMENT_COLUMNS

TABLE_FORMAT = "shest-cells/1"
METADATA_KEY = b"shest"
COLUMNS = ("cell_id", *MEASUREMENT_COLUMNS, "tile_id")
# Sort keys after y and x; they only matter for nuclei with identical centroids.
TIE_BREAKERS = ("tile_id", "area_um2", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")


def build_table(columns: Mapping[str, np.ndarray]):
    """Return a sorted GeoDataFrame with ``cell_id`` 1..n from measured columns.

    Parameters
    ----------
    columns
        Arrays for every name in :data:`MEASUREMENT_COLUMNS`, ``tile_id`` and
        ``geometry`` (shapely Polygons); extra keys are ignored.
    """
    import geopandas as gpd

    frame = pd.DataFrame({name: np.asarray(columns[name], dtype=np.float64) for name in MEASUREMENT_COLUMNS})
    frame["tile_id"] = np.asarray(columns["tile_id"], dtype=np.int64)
    table = gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(list(columns["geometry"]), crs=None), crs=None)
    return sort_and_number(table)


def canonical_order(table):
    """Return the rows sorted by y, x and the tie-breakers, without a ``cell_id`` column."""
    if "cell_id" in table.columns:
        table = table.drop(columns=["cell_id"])
    keys = [table[name].to_numpy() for name in reversed(("y", "x", *TIE_BREAKERS))]
    order = np.lexsort(keys) if len(table) else np.empty(0, dtype=np.int64)
    return table.iloc[order].reset_index(drop=True)


def sort_and_number(table):
    """Sort rows into the canonical order and set ``cell_id`` to 1..n in that order."""
    table = canonical_order(table)
    table.insert(0, "cell_id", np.arange(1, len(table) + 1, dtype=np.int64))
    return table[[*COLUMNS, "geometry"]]


def write_cell_table(path: str | os.PathLike, table, metadata: Mapping[str, Any]) -> None:
    """Write a cell table as GeoParquet atomically, with ``metadata`` under the ``shest`` key.

    geopandas writes the GeoParquet ``geo`` metadata. The table is then rewritten
    once with pyarrow to add the ``shest`` key, because geopandas has no public way
    to add schema metadata.
    """
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False, compression="zstd")
        arrow = pq.read_table(tmp)
        schema_metadata = dict(arrow.schema.metadata or {})
        schema_metadata[METADATA_KEY] = json.dumps(dict(metadata), sort_keys=True).encode("utf-8")
        pq.write_table(arrow.replace_schema_metadata(schema_metadata), tmp, compression="zstd")


def read_cell_table(path: str | os.PathLike):
    """Read a cell table; return (GeoDataFrame, metadata dict).

    Raises
    ------
    InputError
        The file is missing, not Parquet, or not a SHEST cell table.
    """
    import geopandas as gpd
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Cell table not found: {path}. Create it with `shest segment`.")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for non-Parquet input
        raise InputError(f"{path} is not a Parquet file ({exc}); give a *.cells.parquet from `shest segment`.") from None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise InputError(f"{path} has no 'shest' metadata: it is not a cell table written by `shest segment`.")
    metadata = json.loads(raw)
    if metadata.get("format") != TABLE_FORMAT:
        raise InputError(
            f"{path} is a cell table of format {metadata.get('format')!r}; this version reads {TABLE_FORMAT!r}."
        )
    missing = [name for name in (*COLUMNS, "geometry") if name not in schema.names]
    if missing:
        raise InputError(f"{path} lacks the cell table columns {missing}; recreate it with `shest segment`.")
    table = gpd.read_parquet(path)
    return table, metadata
