"""Inference for one slide: cell table in, AnnData, cell GeoJSON, overlay and summary out.

:func:`infer_slide` is the Python entry point behind ``shest infer`` and ``shest run``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shest import __version__
from shest.celltiles.geometry import (
    MAX_NUCLEUS_UM,
    MIN_NUCLEUS_UM,
    PANE_PX,
    WINDOW_UM,
    TileGeometry,
    select_cells,
)
from shest.errors import EmptyResultError, InputError

log = logging.getLogger(__name__)

PROBABILITY_CUTOFF = 0.7
BATCH_SIZE = 64
BBOX_COLUMNS = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")
# Relative difference in µm/px between the cell table and the slide that is reported.
MPP_TOLERANCE = 0.01


@dataclass
class InferenceResult:
    """Paths written by :func:`infer_slide` and its cell counts."""

    h5ad: Path
    geojson: Path
    overlay: Path
    summary: Path
    n_input: int
    n_cells: int
    n_unassigned: int
    counts: dict[str, int] = field(default_factory=dict)
    demo: bool = False
    cells_per_second: float = 0.0

    @property
    def paths(self) -> list[Path]:
        return [self.h5ad, self.geojson, self.overlay, self.summary]


def output_paths(outdir: str | os.PathLike, sample: str) -> dict[str, Path]:
    """Return the four output paths of ``shest infer`` for a sample."""
    outdir = Path(outdir)
    return {
        "h5ad": outdir / f"{sample}.h5ad",
        "geojson": outdir / f"{sample}.cells.geojson",
        "overlay": outdir / f"{sample}.overlay.png",
        "summary": outdir / f"{sample}_celltypes_mqc.tsv",
    }


def read_cells_table(path: str | os.PathLike):
    """Read a cell table (GeoParquet) for inference and check the columns it needs.

    The table is read by :func:`shest.segmentation.table.read_cell_table`, which
    raises the errors for missing or invalid files. Inference also accepts tables
    written by other software. Their ``shest`` metadata may be absent, and only
    ``x``, ``y`` and ``geometry`` are required. Rows are numbered from 1 when there
    is no ``cell_id`` column, and rows without an outline are dropped with a warning.
    Returns the GeoDataFrame and the metadata (empty when absent).
    """
    from shest.segmentation.table import read_cell_table

    path = Path(path)
    cells, meta = read_cell_table(path, required=("x", "y", "geometry"), require_metadata=False)
    if "cell_id" not in cells.columns:
        log.warning("Cell table %s has no cell_id column; numbering its rows from 1.", path)
        cells["cell_id"] = np.arange(1, len(cells) + 1, dtype=np.int64)
    empty = cells.geometry.isna().to_numpy() | cells.geometry.is_empty.to_numpy()
    if empty.any():
        log.warning("Cell table %s: dropping %d rows without a nucleus outline", path, int(empty.sum()))
        cells = cells.loc[~empty]
    return cells.reset_index(drop=True), meta


def nucleus_sizes_px(cells) -> np.ndarray:
    """Return the larger bounding-box side of each nucleus in pixels (bbox columns, else outline bounds)."""
    if all(column in cells.columns for column in BBOX_COLUMNS):
        width = cells["bbox_x1"].to_numpy(np.float64) - cells["bbox_x0"].to_numpy(np.float64)
        height = cells["bbox_y1"].to_numpy(np.float64) - cells["bbox_y0"].to_numpy(np.float64)
    else:
        bounds = cells.geometry.bounds.to_numpy(np.float64)
        width, height = bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]
    return np.maximum(width, height)


def infer_slide(
    slide_path: str | os.PathLike,
    cells_path: str | os.PathLike,
    outdir: str | os.PathLike,
    sample: str,
    model=None,
    *,
    demo: bool = False,
    checkpoint: str | os.PathLike | None = None,
    backbone: str | None = None,
    panel: str | os.PathLike | None = None,
    panel_column: str | None = None,
    classes: list[str] | None = None,
    backbone_architecture: str | None = None,
    mpp: float | None = None,
    batch_size: int = BATCH_SIZE,
    device: str = "auto",
    precision: str = "auto",
    probability_cutoff: float = PROBABILITY_CUTOFF,
    min_nucleus_um: float | None = None,
    max_nucleus_um: float | None = None,
    object_type: str = "cell",
    workers: int | None = None,
) -> InferenceResult:
    """Predict cell types and expression for every nucleus of a slide and write the outputs.

    Writes ``S.h5ad``, ``S.cells.geojson``, ``S.overlay.png`` and
    ``S_celltypes_mqc.tsv`` under ``outdir`` as one group: either all four appear or,
    on an error, none is created or replaced.

    Parameters
    ----------
    slide_path, cells_path
        The slide and its cell table (``S.cells.parquet``).
    outdir, sample
        Output folder and file-name prefix.
    model
        A loaded :class:`shest.model.ShestModel`; when None it is loaded from
        ``demo`` or ``checkpoint``/``backbone``/``panel`` (see
        :func:`shest.model.load_model`).
    mpp
        µm/px override for slides without (or with wrong) metadata.
    batch_size, device, precision
        Cells per model batch, ``auto``/``cpu``/``cuda``, and ``auto``/``bf16``/``fp32``.
    probability_cutoff
        Cells whose top class probability is lower are flagged unassigned.
    min_nucleus_um, max_nucleus_um
        Bounds on the larger bounding-box side of a nucleus; None takes the bounds the
        model's checkpoint records (2 and 16 µm unless it records others).
    object_type
        ``cell`` or ``detection`` for the GeoJSON features.
    workers
        Processes that build tiles (0: in a thread of this process); None takes
        :func:`shest.celltiles.workers.default_workers` (none on the CPU). With
        workers on the CPU the model keeps the remaining CPUs, at least one.

    Raises
    ------
    EmptyResultError
        The cell table has no nuclei, or none passes the size and edge filters.
    """
    from shest.model import choose_device, load_model
    from shest.slide import open_slide

    if not 0.0 <= probability_cutoff <= 1.0:
        raise InputError(f"The probability cutoff must lie between 0 and 1, found {probability_cutoff}.")
    if batch_size < 1:
        raise InputError(f"The batch size must be at least 1, found {batch_size}.")
    if min_nucleus_um is not None and max_nucleus_um is not None:
        _check_nucleus_bounds(min_nucleus_um, max_nucleus_um)
    if workers is not None and workers < 0:
        raise InputError(f"The number of tile workers must be 0 or more, found {workers}.")
    slide_path, cells_path = Path(slide_path), Path(cells_path)
    paths = output_paths(outdir, sample)

    cells, table_meta = read_cells_table(cells_path)
    if len(cells) == 0:
        raise EmptyResultError(
            f"Cell table {cells_path} contains no nuclei, so there is nothing to predict for {slide_path.name}. "
            "Check the tissue detection and segmentation outputs (S.qc.json, S_segmentation_mqc.tsv)."
        )
    device_obj = choose_device(device)
    # The slide is opened and checked against the table before the model is loaded,
    # so a wrong slide or µm/px fails at once instead of after loading the backbone.
    with open_slide(slide_path, mpp=mpp, recorded_mpp=_table_mpp(table_meta)) as slide:
        _check_table_slide(table_meta, slide, cells_path)
        _check_table_mpp(table_meta, slide.mpp, cells_path)
        if model is None:
            model = load_model(
                checkpoint=checkpoint,
                backbone=backbone,
                panel=panel,
                panel_column=panel_column,
                classes=classes,
                backbone_architecture=backbone_architecture,
                demo=demo,
            )
        if model.demo:
            log.warning("DEMO run for %s: outputs are marked demo and hold no biological predictions.", sample)
        geometry = _tile_geometry(slide.mpp, model.tile, min_nucleus_um, max_nucleus_um)
        selection = select_cells(
            cells["x"].to_numpy(), cells["y"].to_numpy(), nucleus_sizes_px(cells), slide.dimensions, geometry
        )
        log.info(
            "%d nuclei: %d kept, %d below %g µm, %d above %g µm, %d with windows crossing the image edge "
            "(window %d px = %g µm at %.4f µm/px)",
            selection.n_input,
            selection.n_kept,
            selection.n_too_small,
            geometry.min_nucleus_um,
            selection.n_too_large,
            geometry.max_nucleus_um,
            selection.n_at_edge,
            geometry.window_px,
            geometry.window_um,
            slide.mpp,
        )
        if selection.n_kept == 0:
            raise EmptyResultError(
                f"None of the {selection.n_input} nuclei in {cells_path} passed the filters ({selection.n_too_small} "
                f"smaller than {geometry.min_nucleus_um} µm, {selection.n_too_large} larger than "
                f"{geometry.max_nucleus_um} µm, "
                f"{selection.n_at_edge} too close to the image edge). Check the µm/px ({slide.mpp:.4f}) and the "
                "--min-nucleus-um/--max-nucleus-um bounds."
            )
        selected_cells = cells.iloc[selection.keep].reset_index(drop=True)
        predictions = _predict(
            slide, selected_cells, selection, geometry, model, device_obj, precision, batch_size, workers
        )
        result = _write_outputs(
            paths, slide, slide_path, cells_path, selected_cells, selection, geometry, model, predictions,
            sample, probability_cutoff, object_type, device_obj,
        )  # fmt: skip
    if model.demo:
        log.warning("DEMO run finished: %s are marked demo.", ", ".join(p.name for p in result.paths))
    return result


def _check_nucleus_bounds(min_nucleus_um: float, max_nucleus_um: float) -> None:
    if not 0.0 <= min_nucleus_um < max_nucleus_um:
        raise InputError(
            f"Invalid nucleus size bounds {min_nucleus_um} and {max_nucleus_um} µm: "
            "--min-nucleus-um must be at least 0 and below --max-nucleus-um."
        )


def _tile_geometry(
    mpp: float, tile: dict[str, Any], min_nucleus_um: float | None, max_nucleus_um: float | None
) -> TileGeometry:
    """Return the tile geometry: the model's window and pane sizes, and the nucleus bounds given or recorded."""
    if min_nucleus_um is None:
        min_nucleus_um = float(tile.get("min_nucleus_um", MIN_NUCLEUS_UM))
    if max_nucleus_um is None:
        max_nucleus_um = float(tile.get("max_nucleus_um", MAX_NUCLEUS_UM))
    _check_nucleus_bounds(min_nucleus_um, max_nucleus_um)
    return TileGeometry(
        mpp=mpp,
        window_um=float(tile.get("window_um", WINDOW_UM)),
        min_nucleus_um=min_nucleus_um,
        max_nucleus_um=max_nucleus_um,
        pane_px=int(tile.get("pane_px", PANE_PX)),
    )


def _predict(slide, selected_cells, selection, geometry, model, device, precision, batch_size, workers):
    from shest.celltiles.workers import available_cpus, default_workers, effective_workers, iter_pane_batches
    from shest.model.predict import predict_cells, torch_threads

    requested = default_workers(device.type) if workers is None else workers
    if requested > 2 * available_cpus():
        log.warning("--workers %d is more than twice the %d CPUs available; tile workers beyond that only "
                    "compete for the same cores", requested, available_cpus())  # fmt: skip
    workers = effective_workers(slide, selection.n_kept, batch_size, requested)
    # On the CPU the model and the tile workers share the cores. A model thread that
    # waits for a busy core stalls all the others at each operation, so the model
    # keeps only the cores the workers leave.
    model_threads = max(1, available_cpus() - workers) if device.type == "cpu" and workers > 0 else None
    batches = iter_pane_batches(
        slide, selection.cx, selection.cy, selected_cells.geometry.to_numpy(), geometry, batch_size, workers
    )
    with torch_threads(model_threads):
        if model_threads is not None:
            log.info("The model runs with %d CPU thread(s) beside %d tile worker(s)", model_threads, workers)
        return predict_cells(model, batches, selection.n_kept, device, precision=precision, batch_size=batch_size)


def _write_outputs(
    paths, slide, slide_path, cells_path, selected_cells, selection, geometry, model, predictions,
    sample, probability_cutoff, object_type, device,
) -> InferenceResult:  # fmt: skip
    from shest.io.atomic import OutputSet
    from shest.outputs.anndata import build_anndata, write_h5ad
    from shest.outputs.geojson import write_cells_geojson
    from shest.outputs.overlay import write_overlay
    from shest.outputs.summary import write_celltype_summary

    described = model.describe()
    info = {
        "sample": sample,
        "slide": slide_path.name,
        "cells_table": cells_path.name,
        "demo": bool(model.demo),
        "model": described,
        "tile": geometry.as_dict(),
        "normalization": model.normalization,
        "filters": {
            "n_input": selection.n_input,
            "n_too_small": selection.n_too_small,
            "n_too_large": selection.n_too_large,
            "n_at_edge": selection.n_at_edge,
        },
        # The device is provenance: bfloat16 on CUDA gives slightly different numbers.
        # Timing goes to the log only, so identical runs write identical files.
        "device": str(device),
    }
    model_name = "demo (random weights)" if model.demo else f"{described['backbone']} + {described['checkpoint_file']}"

    with OutputSet() as out:
        adata = build_anndata(
            selected_cells,
            predictions.class_index,
            predictions.probability,
            predictions.counts,
            predictions.embedding,
            model.classes,
            model.colors,
            model.genes,
            slide.mpp,
            probability_cutoff,
            info,
        )
        write_h5ad(adata, out.path(paths["h5ad"]))
        del adata
        write_cells_geojson(
            out.path(paths["geojson"]),
            selected_cells,
            predictions.class_index,
            predictions.probability,
            model.classes,
            model.colors,
            probability_cutoff,
            sample,
            model.demo,
            metadata={
                "sample": sample,
                "slide": slide_path.name,
                "model": described,
                "probability_cutoff": probability_cutoff,
                "version": __version__,
            },
            object_type=object_type,
        )
        title = f"{sample}: {predictions.n_cells} cells, cutoff {probability_cutoff:g}"
        write_overlay(
            out.path(paths["overlay"]),
            slide,
            selected_cells,
            predictions.class_index,
            predictions.probability,
            model.classes,
            model.colors,
            probability_cutoff,
            title,
            model.demo,
        )
        row = write_celltype_summary(
            out.path(paths["summary"]),
            sample,
            predictions.class_index,
            predictions.probability,
            model.classes,
            probability_cutoff,
            model.demo,
            model_name,
        )
    counts = {name: int(row[name]) for name in model.classes}
    log.info(
        "Wrote %s: %d cells, %d unassigned (probability < %g); %s",
        ", ".join(str(p) for p in paths.values()),
        predictions.n_cells,
        int(row["unassigned"]),
        probability_cutoff,
        ", ".join(f"{name} {count}" for name, count in counts.items()),
    )
    return InferenceResult(
        h5ad=paths["h5ad"],
        geojson=paths["geojson"],
        overlay=paths["overlay"],
        summary=paths["summary"],
        n_input=selection.n_input,
        n_cells=predictions.n_cells,
        n_unassigned=int(row["unassigned"]),
        counts=counts,
        demo=bool(model.demo),
        cells_per_second=predictions.n_cells / max(predictions.seconds, 1e-9),
    )


def _check_table_slide(meta: dict[str, Any], slide, cells_path: Path) -> None:
    """Raise InputError when the cell table records a slide size other than this slide's."""
    try:
        recorded = (int(meta["slide_width"]), int(meta["slide_height"]))
    except (KeyError, TypeError, ValueError):
        return
    if recorded != tuple(slide.dimensions):
        raise InputError(
            f"Cell table {cells_path} was segmented from a slide of {recorded[0]} x {recorded[1]} px "
            f"({meta.get('slide') or 'name not recorded'}), but {slide.path.name} is "
            f"{slide.dimensions[0]} x {slide.dimensions[1]} px. Give the slide the cell table was made from."
        )


def _table_mpp(meta: dict[str, Any]) -> float | None:
    """Return the slide µm/px that the cell table records, or None."""
    table_mpp = meta.get("mpp")
    if isinstance(table_mpp, dict):
        table_mpp = table_mpp.get("mean") or table_mpp.get("x")
    try:
        value = float(table_mpp)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def _check_table_mpp(meta: dict[str, Any], slide_mpp: float, cells_path: Path) -> None:
    value = _table_mpp(meta)
    if value is None:
        return
    if abs(value - slide_mpp) / slide_mpp > MPP_TOLERANCE:
        log.warning(
            "Cell table %s was segmented at %.4f µm/px but the slide is read at %.4f µm/px; "
            "pass the same --mpp to every stage.",
            cells_path,
            value,
            slide_mpp,
        )
