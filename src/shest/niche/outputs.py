"""Write every output of ``shest niche`` for one slide as one atomic group."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from shest import __version__
from shest.io.atomic import OutputSet
from shest.niche.analysis import NicheResult
from shest.niche.figures import (
    draw_co_occurrence,
    draw_enrichment_heatmap,
    draw_infiltration,
    draw_niche_map,
    niche_colors,
)
from shest.niche.graph import expand_to_all_cells
from shest.niche.h5ad import SlideCells, write_niche_h5ad
from shest.niche.report import TABLE_NAMES, build_tables, table_path, write_mqc_tables, write_table

log = logging.getLogger(__name__)

# Name under which the analysed labels are stored in obs; squidpy's uns keys derive from it.
LABEL_KEY = "niche_cell_type"
# Every obs, obsp and uns key this analysis may write; an earlier run's values are removed.
REPLACED_KEYS = {
    "obs": ("niche_analysed", LABEL_KEY, "niche", "niche_compartment", "distance_to_tumour_um"),
    "obsp": ("spatial_connectivities", "spatial_distances"),
    "uns": (
        "spatial_neighbors",
        f"{LABEL_KEY}_colors",
        f"{LABEL_KEY}_nhood_enrichment",
        f"{LABEL_KEY}_interactions",
        f"{LABEL_KEY}_co_occurrence",
        "niche_colors",
        "moranI",
        "shest_niche",
    ),
}


def output_paths(outdir: Path, sample: str) -> dict[str, Path]:
    """Return the final path of every file ``shest niche`` writes, keyed by a short name."""
    outdir = Path(outdir)
    paths = {"h5ad": outdir / f"{sample}.niche.h5ad"}
    for name in TABLE_NAMES:
        paths[f"table_{name}"] = table_path(outdir, sample, name)
    for name in ("map", "enrichment", "cooccurrence", "infiltration"):
        paths[f"figure_{name}"] = outdir / f"{sample}.niche_{name}.png"
    paths["mqc_niche"] = outdir / f"{sample}_niche_mqc.tsv"
    paths["mqc_infiltration"] = outdir / f"{sample}_infiltration_mqc.tsv"
    return paths


def write_outputs(
    result: NicheResult,
    slide: SlideCells,
    outdir: Path,
    background: tuple[np.ndarray, float] | None = None,
) -> dict[str, Path]:
    """Write the niche AnnData, CSV tables, PNG figures and MultiQC tables; all appear or none.

    Returns
    -------
    dict
        The final paths, as :func:`output_paths`.
    """
    paths = output_paths(outdir, result.sample)
    tables = build_tables(result)
    with OutputSet() as out:
        for name, table in tables.items():
            write_table(table, out.path(paths[f"table_{name}"]))
        draw_niche_map(result, out.path(paths["figure_map"]), background)
        draw_enrichment_heatmap(result, out.path(paths["figure_enrichment"]))
        draw_co_occurrence(result, out.path(paths["figure_cooccurrence"]))
        draw_infiltration(result, out.path(paths["figure_infiltration"]))
        write_mqc_tables(result, out.path(paths["mqc_niche"]), out.path(paths["mqc_infiltration"]))
        obs_columns, obsp, uns = _anndata_additions(result, slide, tables)
        write_niche_h5ad(slide.path, out.path(paths["h5ad"]), obs_columns, obsp, uns, REPLACED_KEYS)
    log.info("%s: wrote %d files to %s", result.sample, len(paths), outdir)
    return paths


def _anndata_additions(
    result: NicheResult, slide: SlideCells, tables: dict[str, pd.DataFrame]
) -> tuple[pd.DataFrame, dict, dict]:
    cells = result.cells
    n_total = slide.n_cells
    rows = cells.rows
    index = slide.obs.index

    analysed = np.zeros(n_total, dtype=bool)
    analysed[rows] = True
    labels = _spread_categorical(cells.labels, rows, n_total)
    obs_columns = pd.DataFrame({"niche_analysed": analysed, LABEL_KEY: labels}, index=index)
    if result.niches is not None:
        obs_columns["niche"] = _spread_categorical(result.niches.labels, rows, n_total)
    if result.compartments is not None:
        obs_columns["niche_compartment"] = _spread_categorical(result.compartments.cell_compartment, rows, n_total)
    if result.infiltration is not None:
        distance = np.full(n_total, np.nan)
        distance[rows] = result.infiltration.distance_to_tumour_um
        obs_columns["distance_to_tumour_um"] = distance

    obsp: dict = {}
    uns: dict = {
        f"{LABEL_KEY}_colors": [cells.colors[name] for name in cells.categories],
    }
    if result.graph is not None:
        obsp["spatial_connectivities"] = expand_to_all_cells(result.graph.connectivities, rows, n_total)
        obsp["spatial_distances"] = expand_to_all_cells(result.graph.distances, rows, n_total)
        uns["spatial_neighbors"] = {
            "connectivities_key": "spatial_connectivities",
            "distances_key": "spatial_distances",
            "params": result.graph.params,
        }
    if result.zscore is not None:
        uns[f"{LABEL_KEY}_nhood_enrichment"] = {"zscore": result.zscore, "count": result.enrichment_count}
    if result.interaction_matrix is not None:
        uns[f"{LABEL_KEY}_interactions"] = result.interaction_matrix
    if result.co_occurrence_ratios is not None:
        # squidpy stores the interval edges, a lower bound of 0 first, beside the ratios.
        interval = np.concatenate([[0.0], np.sort(np.asarray(result.params.co_occurrence_um, dtype=float))])
        uns[f"{LABEL_KEY}_co_occurrence"] = {"occ": result.co_occurrence_ratios, "interval": interval}
    if result.niches is not None:
        uns["niche_colors"] = niche_colors(len(result.niches.labels.categories))
    if len(result.moran):
        uns["moranI"] = result.moran.set_index("gene").rename(columns={"morans_i": "I"}).drop(columns=["rank"])

    summary = {
        "sample": result.sample,
        "demo": result.demo,
        "version": __version__,
        "params": result.params.to_dict(),
        "label_key": LABEL_KEY,
    }
    for name in ("summary", "celltypes", "compositions", "infiltration", "distances", "notes"):
        summary[name] = tables[name]
    if result.graph is not None:
        summary["graph"] = result.graph.summary()
    uns["shest_niche"] = summary
    return obs_columns, obsp, uns


def _spread_categorical(values: pd.Categorical, rows: np.ndarray, n_total: int) -> pd.Categorical:
    codes = np.full(n_total, -1, dtype=np.int64)
    codes[rows] = np.asarray(values.codes)
    return pd.Categorical.from_codes(codes, categories=list(values.categories))
