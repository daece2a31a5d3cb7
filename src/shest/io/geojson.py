"""GeoJSON FeatureCollections that QuPath, geopandas and shapely read.

Coordinates are level-0 pixels of the slide, x to the right and y down, which is the
convention QuPath uses when it imports GeoJSON. Features are streamed to disk one at a
time so a slide with a million nuclei never holds the whole document in memory.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shest.io.atomic import atomic_path


def polygon_geometry(ring_xy: Iterable[tuple[float, float]], decimals: int = 2) -> dict[str, Any]:
    """Return a GeoJSON Polygon from one outer ring of (x, y) points, closing it if needed."""
    ring = [[round(float(x), decimals), round(float(y), decimals)] for x, y in ring_xy]
    if len(ring) < 3:
        raise ValueError(f"A polygon ring needs at least 3 points, found {len(ring)}")
    if ring[0] != ring[-1]:
        ring.append(list(ring[0]))
    return {"type": "Polygon", "coordinates": [ring]}


def feature(geometry: Mapping[str, Any], properties: Mapping[str, Any], feature_id: str | None = None) -> dict:
    """Return a GeoJSON Feature; ``feature_id`` becomes the top-level ``id`` (QuPath keeps it)."""
    out: dict[str, Any] = {"type": "Feature"}
    if feature_id is not None:
        out["id"] = feature_id
    out["geometry"] = dict(geometry)
    out["properties"] = dict(properties)
    return out


def open_text(path: str | os.PathLike, mode: str = "rt"):
    """Open a text file, through gzip when the name ends in ``.gz``."""
    if str(path).endswith(".gz"):
        return gzip.open(path, mode, encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def write_feature_collection(
    path: str | os.PathLike,
    features: Iterable[Mapping[str, Any]],
    metadata: Mapping[str, Any] | None = None,
) -> int:
    """Stream ``features`` into a FeatureCollection at ``path`` atomically.

    A ``.gz`` suffix writes gzip with a fixed timestamp, so identical features give
    byte-identical files. ``metadata`` is stored as a foreign member ``"shest"`` of
    the collection (GeoJSON readers ignore it). Returns the number of features.
    """
    count = 0
    with atomic_path(path) as tmp:
        raw = open(tmp, "wb")
        try:
            if str(path).endswith(".gz"):
                stream: io.BufferedIOBase = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="")
            else:
                stream = raw
            text = io.TextIOWrapper(stream, encoding="utf-8", newline="\n")
            text.write('{"type": "FeatureCollection",')
            if metadata:
                text.write(' "shest": ' + json.dumps(metadata, sort_keys=True) + ",")
            text.write(' "features": [\n')
            for item in features:
                if count:
                    text.write(",\n")
                text.write(json.dumps(item, separators=(",", ":")))
                count += 1
            text.write("\n]}\n")
            text.flush()
            text.detach()
            if stream is not raw:
                stream.close()
        finally:
            raw.close()
    return count


def read_feature_collection(path: str | os.PathLike) -> dict[str, Any]:
    """Read a GeoJSON FeatureCollection (plain or gzipped) and check its type."""
    with open_text(path) as handle:
        data = json.load(handle)
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        kind = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{Path(path)} is not a GeoJSON FeatureCollection (found type {kind!r})")
    return data
