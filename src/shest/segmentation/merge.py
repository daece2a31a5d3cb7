"""Combine the cell tables of the chunks of one slide into the slide's table.

Chunks partition the tiles of a plan and every nucleus belongs to exactly one tile,
so chunk tables do not overlap. Merging still checks for duplicates: the same row
given twice (a chunk passed twice) and nuclei of different tiles whose outlines
overlap by IoU >= 0.5 (which would mean the tiles' cores overlapped). The result is
sorted and numbered by :func:`shest.segmentation.table.sort_and_number`, so the same
chunks in any order give the same table and the same bytes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shest.errors import InputError
from shest.segmentation.table import COLUMNS, canonical_order, read_cell_table, sort_and_number

log = logging.getLogger(__name__)

DUPLICATE_IOU = 0.5
# Metadata keys that differ between the chunks of one slide.
CHUNK_KEYS = ("chunk", "chunks_included")


def merge_chunk_tables(paths: Sequence[str | os.PathLike], allow_missing: bool = False):
    """Read chunk cell tables and return the merged (GeoDataFrame, metadata).

    Parameters
    ----------
    paths
        Cell tables written by ``shest segment --chunk``, in any order.
    allow_missing
        Merge even when some chunks of the plan are absent (their nuclei are then
        missing from the result); by default that is an error.

    Raises
    ------
    InputError
        No input, tables from different slides, plans or parameters, or missing chunks.
    """
    import geopandas as gpd
    import pandas as pd

    if not paths:
        raise InputError("No chunk cell tables given to merge.")
    # Sorted by name so that error messages name the same files whatever the order given.
    ordered = sorted((Path(p) for p in paths), key=lambda p: str(p))
    tables = []
    reference: dict[str, Any] | None = None
    reference_path: Path | None = None
    included: set[int] = set()
    for path in ordered:
        table, metadata = read_cell_table(path)
        common = _without_chunk_keys(metadata)
        if reference is None:
            reference, reference_path = common, path
        elif common != reference:
            differing = sorted(key for key in set(common) | set(reference) if common.get(key) != reference.get(key))
            raise InputError(
                f"{path} does not belong with {reference_path}: they differ in {', '.join(differing)}. "
                "Merge only the chunks of one `shest segment` run over one tile plan."
            )
        included.update(_chunks_of(metadata, path))
        tables.append(table)

    assert reference is not None
    expected = set(range(int(reference.get("plan", {}).get("chunks", 1))))
    missing = sorted(expected - included)
    if missing and not allow_missing:
        raise InputError(
            f"Chunks {missing} of the tile plan are missing from the inputs (got {sorted(included)}). "
            "Pass every chunk's cell table, or use --allow-missing-chunks to merge what is there."
        )
    if missing:
        log.warning("Merging without chunks %s: their nuclei are absent from the result", missing)

    combined = pd.concat(tables, ignore_index=True)
    combined = gpd.GeoDataFrame(combined, geometry="geometry", crs=None)
    combined = remove_duplicates(combined)
    merged = sort_and_number(combined)
    metadata = dict(reference)
    metadata["chunk"] = None
    metadata["chunks_included"] = sorted(included)
    return merged, metadata


def remove_duplicates(table):
    """Drop repeated rows and overlapping nuclei of different tiles, deterministically.

    Rows are first put in the canonical order, so which copy survives does not depend
    on the order of the inputs: the earlier in (y, x, tile, ...) order is kept.
    """
    if table.empty:
        return table
    table = canonical_order(table)
    key_columns = [name for name in COLUMNS if name != "cell_id"]
    repeated = table.duplicated(subset=key_columns, keep="first").to_numpy()
    if repeated.any():
        log.warning("Removed %d nuclei that appear in more than one input table", int(repeated.sum()))
        table = table.loc[~repeated].reset_index(drop=True)

    overlapping = _overlapping_across_tiles(table)
    if overlapping.any():
        log.warning(
            "Removed %d nuclei overlapping a nucleus of another tile (IoU >= %.1f)",
            int(overlapping.sum()), DUPLICATE_IOU,
        )
        table = table.loc[~overlapping].reset_index(drop=True)
    return table


def _overlapping_across_tiles(table) -> np.ndarray:
    """Flag the later nucleus of every pair from different tiles with IoU >= DUPLICATE_IOU."""
    import shapely

    geometries = table.geometry.to_numpy()
    tiles = table["tile_id"].to_numpy()
    left, right = table.sindex.query(geometries, predicate="intersects")
    candidates = (left < right) & (tiles[left] != tiles[right])
    left, right = left[candidates], right[candidates]
    flagged = np.zeros(len(table), dtype=bool)
    if len(left) == 0:
        return flagged
    intersection = shapely.area(shapely.intersection(geometries[left], geometries[right]))
    union = shapely.area(geometries[left]) + shapely.area(geometries[right]) - intersection
    iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    for a, b in zip(left[iou >= DUPLICATE_IOU], right[iou >= DUPLICATE_IOU]):
        if not flagged[a]:
            flagged[b] = True
    return flagged


def _without_chunk_keys(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key not in CHUNK_KEYS}


def _chunks_of(metadata: dict[str, Any], path: Path) -> list[int]:
    chunks = metadata.get("chunks_included")
    if not isinstance(chunks, list):
        raise InputError(f"{path} lacks the 'chunks_included' metadata; recreate it with `shest segment`.")
    return [int(chunk) for chunk in chunks]
