"""The cell table: one row per nucleus, stored as GeoParquet.

Columns are listed in :data:`COLUMNS` (see docs/architecture.md). The Parquet schema
metadata key ``shest`` contains JSON describing the sample, slide, resolution, backend,
parameters and calibration. Rows are sorted by ``y``, then ``x`` (ties broken by the
other columns), and ``cell_id`` numbers them from 1 in that order, so the same
nuclei always give the same ids and the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shest.errors import InputError
from shest.io.atomic import atomic_path
from shest.segmentation.features import MEASUREMENT_COLUMNS

log = logging.getLogger(__name__)

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


def read_cell_table(
    path: str | os.PathLike,
    required: Sequence[str] = (*COLUMNS, "geometry"),
    require_metadata: bool = True,
):
    """Read a cell table; return (GeoDataFrame, metadata dict).

    Parameters
    ----------
    path
        A ``*.cells.parquet`` file.
    required
        Columns the table must have; by default every column ``shest segment`` writes.
    require_metadata
        Reject a table without the ``shest`` metadata key. When False, such a table
        (a GeoParquet written by other software) is read with empty metadata and a
        logged warning. Metadata that is present must be valid JSON whose format,
        if stated, is this version's.

    Raises
    ------
    InputError
        The file is missing, not GeoParquet, lacks a required column, or is not a
        SHEST cell table of this version.
    """
    import geopandas as gpd
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Cell table not found: {path}. Create it with `shest segment` (or `shest merge-cells`).")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for non-Parquet input
        raise InputError(f"{path} is not a Parquet file ({exc}); give a *.cells.parquet from `shest segment`.") from None
    metadata = _table_metadata(path, schema, require_metadata)
    missing = [name for name in required if name not in schema.names]
    if missing:
        raise InputError(
            f"{path} lacks the cell table column(s) {', '.join(missing)}; recreate it with `shest segment`."
        )
    try:
        table = gpd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - geopandas and pyarrow raise many types on bad files
        raise InputError(f"{path} could not be read as a GeoParquet cell table: {exc}") from exc
    return table, metadata


def _table_metadata(path: Path, schema, require_metadata: bool) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        if require_metadata:
            raise InputError(f"{path} has no 'shest' metadata: it is not a cell table written by `shest segment`.")
        log.warning(
            "Cell table %s has no 'shest' metadata, so its slide size and µm/px cannot be checked against the slide.",
            path,
        )
        return {}
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: the 'shest' metadata is not valid JSON ({exc}); recreate the table.") from None
    if not isinstance(metadata, dict):
        raise InputError(f"{path}: the 'shest' metadata is not a JSON object; recreate the table.")
    found = metadata.get("format")
    if found != TABLE_FORMAT and (require_metadata or found is not None):
        raise InputError(f"{path} is a cell table of format {found!r}; this version reads {TABLE_FORMAT!r}.")
    return metadata
