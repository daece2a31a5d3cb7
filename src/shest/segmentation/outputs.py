"""Slide-level segmentation outputs: cell table, nucleus GeoJSON and MultiQC table."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shest.io.atomic import OutputSet
from shest.io.geojson import feature, polygon_geometry, write_feature_collection
from shest.report.multiqc import write_mqc_table
from shest.segmentation.features import COORDINATE_DECIMALS
from shest.segmentation.table import write_cell_table

log = logging.getLogger(__name__)

MQC_SECTION_ID = "shest_segmentation"
# Nuclei per mm² of tissue below which segmentation has probably failed. H&E tissue
# contains a few thousand: 4,800 per mm² on the skin of CMU-1-Small-Region and 10,600
# on a lymphocyte-rich TMA core with the watershed backend. Fat and acellular tissue
# can legitimately fall below it, so it is a warning.
MIN_PLAUSIBLE_NUCLEI_PER_MM2 = 500
# Smaller tissue areas have too few nuclei for the density to mean anything.
MIN_DENSITY_CHECK_AREA_MM2 = 0.01
# Namespace of the feature ids: uuid5(namespace, "<sample>/<cell_id>") is a valid,
# reproducible UUID, which QuPath keeps as the object's id.
FEATURE_ID_NAMESPACE = uuid.UUID("9a6f3c1e-5d2b-4c1a-9b0e-2f5e8d7c4a10")
# Columns copied into each GeoJSON feature's QuPath measurements, with their names there.
GEOJSON_MEASUREMENTS = {
    "area_um2": "Nucleus: Area µm^2",
    "perimeter_um": "Nucleus: Perimeter µm",
    "eccentricity": "Nucleus: Eccentricity",
    "solidity": "Nucleus: Solidity",
    "hematoxylin_od": "Nucleus: Hematoxylin OD mean",
}


@dataclass(frozen=True)
class SlideOutputPaths:
    """Final paths of the slide-level outputs of one sample."""

    cells: Path
    geojson: Path
    mqc: Path

    @classmethod
    def for_sample(cls, outdir: Path, sample: str, gzip: bool) -> SlideOutputPaths:
        suffix = ".geojson.gz" if gzip else ".geojson"
        return cls(
            cells=outdir / f"{sample}.cells.parquet",
            geojson=outdir / f"{sample}.nuclei{suffix}",
            mqc=outdir / f"{sample}_segmentation_mqc.tsv",
        )


def nucleus_features(table, sample: str) -> Iterator[dict[str, Any]]:
    """Yield one GeoJSON Feature per nucleus (level-0 px, ``objectType: "detection"``)."""
    measurement_columns = {name: table[name].to_numpy() for name in GEOJSON_MEASUREMENTS}
    cell_ids = table["cell_id"].to_numpy()
    for index, polygon in enumerate(table.geometry.to_numpy()):
        cell_id = int(cell_ids[index])
        measurements = {
            label: _finite_or_none(measurement_columns[name][index]) for name, label in GEOJSON_MEASUREMENTS.items()
        }
        properties = {
            "objectType": "detection",
            "name": f"Nucleus {cell_id}",
            "cell_id": cell_id,
            "measurements": measurements,
        }
        feature_id = str(uuid.uuid5(FEATURE_ID_NAMESPACE, f"{sample}/{cell_id}"))
        geometry = polygon_geometry(polygon.exterior.coords, decimals=COORDINATE_DECIMALS)
        yield feature(geometry, properties, feature_id=feature_id)


def density_warnings(table, metadata: Mapping[str, Any]) -> list[str]:
    """Return a warning when the nuclei per mm² of tissue are implausibly few for H&E, else nothing.

    Such a count means that segmentation failed without an error: a wrong µm/px, a
    threshold that merges nuclei into blobs larger than the size limit, or a model
    that does not fit the stain.
    """
    count = int(len(table))
    tissue_mm2 = metadata.get("plan", {}).get("tissue_area_mm2")
    if not tissue_mm2 or tissue_mm2 < MIN_DENSITY_CHECK_AREA_MM2:
        return []
    density = count / tissue_mm2
    if density >= MIN_PLAUSIBLE_NUCLEI_PER_MM2:
        return []
    segmentation = metadata.get("segmentation", {})
    if segmentation.get("backend") == "watershed":
        threshold = segmentation.get("threshold_od")
        cause = (
            f"the watershed threshold (hematoxylin OD {threshold:.3f}, from {segmentation.get('threshold_source')}; "
            "set one with --threshold-od)"
        ) if isinstance(threshold, (int, float)) else "the watershed threshold (--threshold-od)"
    else:
        cause = "the Cellpose model (--cellpose-model) and --diameter-um"
    return [
        f"Only {density:.0f} nuclei per mm² of tissue ({count} nuclei on {tissue_mm2:.3f} mm²), below "
        f"{MIN_PLAUSIBLE_NUCLEI_PER_MM2:g}: H&E tissue usually has a few thousand per mm², and only fat or "
        f"acellular tissue has this few, so segmentation has probably failed. Check the µm/px "
        f"({metadata.get('mpp', float('nan')):.4g}, --mpp; nuclei should measure 5-10 µm) and {cause}."
    ]


def segmentation_summary(table, metadata: Mapping[str, Any], warnings: list[str] | None = None) -> dict[str, Any]:
    """Return the MultiQC row of one sample: counts, density and size of the nuclei, and warnings."""
    count = int(len(table))
    tissue_mm2 = metadata.get("plan", {}).get("tissue_area_mm2")
    density = count / tissue_mm2 if tissue_mm2 else None
    areas = table["area_um2"].to_numpy() if count else np.empty(0)
    hematoxylin = table["hematoxylin_od"].to_numpy() if count else np.empty(0)
    warnings = density_warnings(table, metadata) if warnings is None else warnings
    return {
        "nuclei": count,
        "tissue_area_mm2": tissue_mm2,
        "nuclei_per_mm2": density,
        "median_area_um2": float(np.median(areas)) if count else None,
        "median_hematoxylin_od": float(np.median(hematoxylin)) if count else None,
        "tiles": metadata.get("plan", {}).get("tiles"),
        "backend": metadata.get("segmentation", {}).get("backend"),
        "segmentation_mpp": metadata.get("segmentation_mpp"),
        "warnings": len(warnings),
        "warning": " ".join(warnings) or None,
    }


MQC_HEADERS = {
    "nuclei": {"title": "Nuclei", "description": "Nuclei segmented on the slide", "format": "{:,.0f}"},
    "tissue_area_mm2": {"title": "Tissue mm²", "description": "Tissue area of the tile plan", "format": "{:,.2f}"},
    "nuclei_per_mm2": {"title": "Nuclei / mm²", "description": "Nuclei per mm² of tissue", "format": "{:,.0f}"},
    "median_area_um2": {"title": "Median area µm²", "description": "Median nucleus area", "format": "{:,.1f}"},
    "median_hematoxylin_od": {
        "title": "Median H OD",
        "description": "Median of the per-nucleus mean hematoxylin optical density",
        "format": "{:,.3f}",
    },
    "tiles": {"title": "Tiles", "description": "Tiles in the tile plan", "format": "{:,.0f}"},
    "backend": {"title": "Backend", "description": "Segmentation backend"},
    "segmentation_mpp": {"title": "µm/px", "description": "Resolution the nuclei were segmented at", "format": "{:,.3f}"},
    "warnings": {"title": "Warnings", "description": "Number of segmentation warnings", "format": "{:,.0f}"},
    "warning": {"title": "Warning", "description": "Text of the segmentation warnings"},
}


def write_slide_outputs(
    table, metadata: Mapping[str, Any], paths: SlideOutputPaths, sample: str
) -> None:
    """Write the cell table, the nucleus GeoJSON and the MultiQC table, all or none.

    Warnings about the result (an implausibly low nucleus density) are logged,
    stored under ``warnings`` in the cell table's metadata and shown in the MultiQC
    table.
    """
    warnings = density_warnings(table, metadata)
    for message in warnings:
        log.warning("%s: %s", sample, message)
    metadata = {**metadata, "warnings": warnings}
    geojson_metadata = {
        "sample": sample,
        "slide": metadata.get("slide"),
        "coordinates": "level-0 pixels",
        "mpp": metadata.get("mpp"),
        "backend": metadata.get("segmentation", {}).get("backend"),
    }
    with OutputSet() as out:
        write_cell_table(out.path(paths.cells), table, metadata)
        count = write_feature_collection(out.path(paths.geojson), nucleus_features(table, sample), geojson_metadata)
        write_mqc_table(
            out.path(paths.mqc),
            section_id=MQC_SECTION_ID,
            section_name="Nuclear segmentation",
            description="Nuclei segmented by `shest segment` over the tissue tile plan.",
            rows={sample: segmentation_summary(table, metadata, warnings)},
            headers=MQC_HEADERS,
        )
    log.info("Wrote %d nuclei to %s and %s", count, paths.cells, paths.geojson)


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None
