"""The files of ``shest qc`` for one sample, written together or not at all."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shapely.geometry import MultiPolygon

from shest import __version__
from shest.io.atomic import OutputSet
from shest.qc.report import QcParams, SlideQc, assess_slide
from shest.report.multiqc import write_mqc_table
from shest.slide.reader import open_slide
from shest.tiling.plan import TilePlan, check_target_mpp, make_tile_plan
from shest.tissue.images import save_mask_png, save_outline_png
from shest.tissue.polygons import mask_polygons, write_tissue_geojson
from shest.tissue.roi import load_roi

log = logging.getLogger(__name__)

QC_FORMAT = "shest-qc/1"
MQC_SECTION_ID = "shest_qc"


@dataclass(frozen=True)
class PlanParams:
    """Tile plan parameters (see :func:`shest.tiling.make_tile_plan`); sizes in µm."""

    target_mpp: float = 0.5
    tile_size_um: float = 512.0
    overlap_um: float = 32.0
    chunks: int = 1
    min_tissue_fraction: float = 0.0


@dataclass
class QcRun:
    """Result of one ``shest qc`` run: the QC, the plan, the output paths and all warnings."""

    sample: str
    qc: SlideQc
    plan: TilePlan
    paths: dict[str, Path]
    warnings: list[str]


def output_paths(outdir: str | os.PathLike, sample: str) -> dict[str, Path]:
    """Return the output file of each kind for a sample."""
    outdir = Path(outdir)
    return {
        "qc_json": outdir / f"{sample}.qc.json",
        "multiqc": outdir / f"{sample}_qc_mqc.tsv",
        "thumbnail": outdir / f"{sample}.thumbnail.png",
        "tissue_mask": outdir / f"{sample}.tissue_mask.png",
        "tissue_geojson": outdir / f"{sample}.tissue.geojson",
        "tiles": outdir / f"{sample}.tiles.json",
    }


def make_qc_plan(qc: SlideQc, slide_name: str, params: PlanParams = PlanParams(), roi=None) -> TilePlan:
    """Plan tiles over the detected tissue and split them into ``params.chunks`` chunks.

    The plan stores the tissue polygons of the whole slide and the region of interest
    ``roi`` (a shapely geometry in level-0 pixels, or None), and segmentation keeps
    only the nuclei inside both. The ROI is stored as drawn rather than through the
    thumbnail-resolution mask, so its edge is exact.
    """
    thumb = qc.thumbnail
    tissue = MultiPolygon(mask_polygons(qc.tissue.slide_mask, thumb.downsample_x, thumb.downsample_y))
    plan = make_tile_plan(
        qc.tissue.mask,
        thumb.downsample,
        (qc.info["width"], qc.info["height"]),
        (qc.info["mpp_x"] + qc.info["mpp_y"]) / 2.0,
        slide_name,
        target_mpp=params.target_mpp,
        tile_size_um=params.tile_size_um,
        overlap_um=params.overlap_um,
        min_tissue_fraction=params.min_tissue_fraction,
        tissue=tissue,
        roi=roi,
    )
    return plan.split(params.chunks)


def plan_summary(plan: TilePlan) -> dict[str, Any]:
    """Return the plan's parameters and tile counts, without the tiles."""
    header = {key: value for key, value in plan.to_dict().items() if key not in ("tiles", "warnings")}
    per_chunk = [0] * plan.chunks
    for tile in plan.tiles:
        per_chunk[tile.chunk] += 1
    return {**header, "tile_count": len(plan.tiles), "tiles_per_chunk": per_chunk}


def combined_warnings(qc: SlideQc, plan: TilePlan) -> list[str]:
    """Return the QC warnings followed by the plan's, without a second 'no tissue' message."""
    plan_warnings = [w for w in plan.warnings if not (qc.tissue.is_empty and w.startswith("No tissue"))]
    return [*qc.warnings, *plan_warnings]


def qc_document(qc: SlideQc, sample: str, plan: TilePlan, paths: dict[str, Path], extra: dict[str, Any]) -> dict:
    """Return the content of ``S.qc.json``."""
    return {
        "format": QC_FORMAT,
        "shest_version": __version__,
        "sample": sample,
        "slide": qc.info,
        "thumbnail": {
            **qc.thumbnail.describe(),
            "file": paths["thumbnail"].name,
            "mask_file": paths["tissue_mask"].name,
            "note": "mask pixel (row, col) covers level-0 x from col * downsample_x to (col + 1) * downsample_x, y likewise",
        },
        "tissue_area_mm2": round(qc.tissue.area_mm2, 6),
        "metrics": qc.metrics(),
        "details": qc.details(),
        "warnings": combined_warnings(qc, plan),
        "plan": {**plan_summary(plan), "file": paths["tiles"].name},
        "parameters": {"qc": qc.params.to_dict(), **extra},
    }


def mqc_row(qc: SlideQc, plan: TilePlan, warnings: list[str]) -> dict[str, Any]:
    """Return the MultiQC row of a sample: headline metrics, plan size and warning count."""
    return {**qc.metrics(), "plan_tiles": len(plan.tiles), "warnings": len(warnings)}


MQC_HEADERS = {
    "tissue_area_mm2": {"title": "Tissue (mm²)", "description": "Detected tissue area", "format": "{:,.3f}"},
    "tissue_fraction": {"title": "Tissue fraction", "description": "Share of the image that is tissue", "min": 0, "max": 1, "format": "{:,.3f}"},
    "focus_median": {"title": "Focus", "description": "Median variance of the Laplacian over tissue tiles", "format": "{:,.0f}"},
    "blurred_fraction": {"title": "Blurred tiles", "description": "Share of tissue tiles below the focus threshold", "min": 0, "max": 1, "format": "{:,.2f}"},
    "focus_tiles": {"title": "Focus tiles", "description": "Tissue tiles scored for focus", "format": "{:,.0f}"},
    "ink_fraction": {"title": "Ink fraction", "description": "Ink / (tissue + ink)", "min": 0, "max": 1, "format": "{:,.3f}"},
    "ink_area_mm2": {"title": "Ink (mm²)", "description": "Pen or marker ink area", "format": "{:,.3f}"},
    "background_brightness": {"title": "Background", "description": "Mean background luminance (0-255)", "min": 0, "max": 255, "format": "{:,.0f}"},
    "mean_hematoxylin_od": {"title": "H OD", "description": "Mean haematoxylin optical density of stained pixels (Macenko)", "format": "{:,.3f}"},
    "mean_eosin_od": {"title": "E OD", "description": "Mean eosin optical density of stained pixels (Macenko)", "format": "{:,.3f}"},
    "mpp": {"title": "µm/px", "description": "Level-0 pixel size", "format": "{:,.4f}"},
    "objective_power": {"title": "Objective", "description": "Objective power recorded by the scanner"},
    "objective_mpp_consistent": {"title": "Objective ~ µm/px", "description": "µm/px within 0.7-1.4 times 10 µm / objective power"},
    "plan_tiles": {"title": "Tiles", "description": "Tiles in the segmentation plan", "format": "{:,.0f}"},
    "warnings": {"title": "Warnings", "description": "Number of QC warnings (listed in S.qc.json)", "format": "{:,.0f}"},
}


def write_qc_outputs(
    outdir: str | os.PathLike,
    sample: str,
    qc: SlideQc,
    plan: TilePlan,
    extra_parameters: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the six QC files of a sample as one group (all or none); return their paths."""
    paths = output_paths(outdir, sample)
    thumb = qc.thumbnail
    warnings = combined_warnings(qc, plan)
    if plan.tissue is not None and not qc.tissue.roi_applied:
        polygons = list(getattr(plan.tissue, "geoms", [plan.tissue]))
    else:
        polygons = mask_polygons(qc.tissue.mask, thumb.downsample_x, thumb.downsample_y)
    document = qc_document(qc, sample, plan, paths, extra_parameters or {})
    geojson_metadata = {
        "sample": sample,
        "slide": Path(qc.info["path"]).name,
        "mpp_x": qc.info["mpp_x"],
        "mpp_y": qc.info["mpp_y"],
        "coordinates": "level-0 pixels, x right, y down",
        "tissue_area_mm2": document["tissue_area_mm2"],
    }
    with OutputSet() as out:
        with open(out.path(paths["qc_json"]), "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
            handle.write("\n")
        write_mqc_table(
            out.path(paths["multiqc"]),
            MQC_SECTION_ID,
            "Slide QC",
            "Tissue, focus, ink, background and stain metrics of each slide (shest qc).",
            {sample: mqc_row(qc, plan, warnings)},
            headers=MQC_HEADERS,
        )
        save_outline_png(out.path(paths["thumbnail"]), thumb.image, qc.tissue.mask, qc.tissue.ink)
        save_mask_png(out.path(paths["tissue_mask"]), qc.tissue.mask)
        write_tissue_geojson(out.path(paths["tissue_geojson"]), polygons, thumb.slide_mpp_x, thumb.slide_mpp_y, geojson_metadata)
        plan.save(out.path(paths["tiles"]))
    return paths


def run_slide_qc(
    slide_path: str | os.PathLike,
    outdir: str | os.PathLike,
    sample: str,
    mpp: float | None = None,
    roi_path: str | os.PathLike | None = None,
    params: QcParams = QcParams(),
    plan_params: PlanParams = PlanParams(),
) -> QcRun:
    """Run slide QC and tile planning on one slide and write its files.

    This is ``shest qc`` without the argument parsing; ``shest run`` calls it too.

    Raises
    ------
    SlideError, MppError, InputError
        The slide cannot be read, has no usable pixel size, or a parameter or the
        ROI file is invalid. No output file is written then.
    """
    roi = load_roi(roi_path) if roi_path is not None else None
    with open_slide(slide_path, mpp=mpp) as slide:
        # Before the QC work, so that a resolution the plan cannot use fails at once.
        check_target_mpp(plan_params.target_mpp, slide.mpp)
        qc = assess_slide(slide, params, roi, roi_name=str(roi_path) if roi_path is not None else None)
        plan = make_qc_plan(qc, slide.path.name, plan_params, roi)
    warnings = combined_warnings(qc, plan)
    for message in warnings[len(qc.warnings) :]:
        log.warning("%s: %s", Path(slide_path).name, message)
    extra = {"plan": asdict(plan_params), "roi": str(roi_path) if roi_path is not None else None}
    paths = write_qc_outputs(outdir, sample, qc, plan, extra)
    log.info(
        "%s: %.3f mm² tissue, %d tiles in %d chunk(s), %d warning(s); outputs in %s",
        sample, qc.tissue.area_mm2, len(plan.tiles), plan.chunks, len(warnings), Path(outdir),
    )
    return QcRun(sample=sample, qc=qc, plan=plan, paths=paths, warnings=warnings)
