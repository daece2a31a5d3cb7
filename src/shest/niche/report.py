"""Per-slide CSV tables and MultiQC custom-content tables of the niche analysis.

Every CSV starts with a ``sample`` column and ends with a ``demo`` column, so the
cohort command can concatenate the tables of many slides and a demo run stays
recognisable in any table. Undefined values are written as empty cells, and the
``note`` column or the ``niche_notes`` table gives the reason.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from shest.niche.analysis import NicheResult
from shest.report.multiqc import write_mqc_table

# Table name -> file suffix after the sample name; the cohort command reads these.
TABLE_SUFFIX = ".niche_{name}.csv"
TABLE_NAMES = (
    "summary",
    "celltypes",
    "enrichment",
    "interactions",
    "cooccurrence",
    "compositions",
    "moran",
    "infiltration",
    "distances",
    "notes",
)
DEMO_TEXT = (
    "DEMO: these cells were classified by a seeded stand-in model or a synthetic layout, not by the SHEST weights. "
)


def table_path(outdir: Path, sample: str, name: str) -> Path:
    """Return the path of one per-slide table."""
    return Path(outdir) / f"{sample}{TABLE_SUFFIX.format(name=name)}"


def build_tables(result: NicheResult) -> dict[str, pd.DataFrame]:
    """Return every per-slide table, keyed by the names in :data:`TABLE_NAMES`."""
    moran_top = result.moran.head(result.params.moran_top)
    if result.niches is not None:
        compositions = result.niches.composition.copy()
        compositions.insert(1, "window", result.niches.window)
    else:
        compositions = pd.DataFrame(columns=["niche", "window", "n_cells", "cell_fraction", "dominant_cell_type"])
    infiltration = result.infiltration
    tables = {
        "summary": pd.DataFrame([summary_row(result)]),
        "celltypes": _celltype_table(result),
        "enrichment": result.enrichment,
        "interactions": result.interactions,
        "cooccurrence": result.co_occurrence,
        "compositions": compositions,
        "moran": moran_top,
        "infiltration": infiltration.metrics if infiltration is not None else _empty_infiltration(result),
        "distances": infiltration.distance_histogram
        if infiltration is not None
        else pd.DataFrame(columns=["bin_start_um", "bin_end_um", "lymphocytes", "fraction"]),
        "notes": result.notes.table(),
    }
    return {name: _with_sample(table, result) for name, table in tables.items()}


def write_table(table: pd.DataFrame, path: Path) -> None:
    """Write one table as CSV: comma-separated, empty cells for NaN, 6 significant digits kept."""
    table.to_csv(path, index=False, na_rep="", float_format="%.6g", lineterminator="\n")


def summary_row(result: NicheResult) -> dict:
    """Return the slide's headline numbers, also used for the MultiQC tables and the cohort summary."""
    params = result.params
    cells = result.cells
    row: dict = {
        "input_cells": result.n_input_cells,
        "analysed_cells": cells.n_cells,
        "cell_types": len(cells.categories),
        "graph": params.graph,
    }
    graph_summary = result.graph.summary() if result.graph is not None else {}
    row["edges"] = graph_summary.get("n_edges")
    row["mean_degree"] = graph_summary.get("mean_degree")

    if result.niches is not None:
        composition = result.niches.composition
        row["niches"] = len(composition)
        row["largest_niche_fraction"] = float(composition["cell_fraction"].max())
        row["largest_niche_dominant_type"] = str(composition["dominant_cell_type"].iloc[0])
    else:
        row.update(niches=None, largest_niche_fraction=None, largest_niche_dominant_type=None)

    row["zscore_tumour_lymphocyte"] = _pair_value(result.enrichment, params.tumour_type, params.lymphocyte_type)
    row["zscore_tumour_tumour"] = _pair_value(result.enrichment, params.tumour_type, params.tumour_type)
    if len(result.moran):
        row["top_moran_gene"] = str(result.moran["gene"].iloc[0])
        row["top_moran_i"] = float(result.moran["morans_i"].iloc[0])
    else:
        row.update(top_moran_gene=None, top_moran_i=None)

    infiltration = result.infiltration
    metrics = {
        "tumour_area_mm2": "tumour_area",
        "tumour_regions": "tumour_regions",
        "lymphocyte_density_tumour": "lymphocyte_density_tumour",
        "lymphocyte_density_margin": "lymphocyte_density_margin",
        "lymphocyte_density_stroma": "lymphocyte_density_stroma",
        "lymphocytes_within_contact": f"lymphocytes_within_{params.contact_um:g}um_of_tumour",
        "tumour_lymphocyte_distance_median_um": "tumour_lymphocyte_distance_p50",
    }
    for column, metric in metrics.items():
        value = infiltration.value(metric) if infiltration is not None else float("nan")
        row[column] = value if math.isfinite(value) else None

    row["notes"] = len(result.notes)
    return row


def write_mqc_tables(result: NicheResult, niche_path: Path, infiltration_path: Path) -> None:
    """Write ``S_niche_mqc.tsv`` (section ``shest_niche``) and ``S_infiltration_mqc.tsv`` (``shest_infiltration``)."""
    row = summary_row(result)
    params = result.params
    demo = DEMO_TEXT if result.demo else ""
    niche_columns = [
        "analysed_cells",
        "cell_types",
        "edges",
        "mean_degree",
        "niches",
        "largest_niche_fraction",
        "largest_niche_dominant_type",
        "zscore_tumour_lymphocyte",
        "zscore_tumour_tumour",
        "top_moran_gene",
        "top_moran_i",
        "demo",
        "notes",
    ]
    niche_notes = " ".join(
        f"{analysis}: {note}"
        for analysis, note in result.notes.table().itertuples(index=False)
        if analysis != "infiltration"
    )
    niche_values = {column: row.get(column) for column in niche_columns}
    niche_values.update(demo=result.demo, notes=niche_notes)
    write_mqc_table(
        niche_path,
        section_id="shest_niche",
        section_name="Spatial niches",
        description=(
            f"{demo}Spatial graph ({params.graph}), neighbourhood enrichment z-scores of "
            f"{params.tumour_type} with {params.lymphocyte_type} and with itself, cellular niches "
            "(k-means on local cell-type compositions) and the gene with the highest Moran's I."
        ),
        rows={result.sample: niche_values},
        columns=niche_columns,
        headers={
            "analysed_cells": {"title": "Cells", "description": "Cells analysed", "format": "{:,.0f}"},
            "cell_types": {"title": "Types", "description": "Cell types present", "format": "{:,.0f}"},
            "edges": {"title": "Edges", "description": "Edges of the spatial graph", "format": "{:,.0f}"},
            "mean_degree": {"title": "Degree", "description": "Mean number of graph neighbours per cell"},
            "niches": {"title": "Niches", "description": "Cellular niches found by k-means", "format": "{:,.0f}"},
            "largest_niche_fraction": {
                "title": "Largest niche",
                "description": "Share of cells in the largest niche",
                "min": 0,
                "max": 1,
            },
            "largest_niche_dominant_type": {
                "title": "Its main type",
                "description": "Most common type in the largest niche",
            },
            "zscore_tumour_lymphocyte": {
                "title": "z tumour-lymph",
                "description": "Neighbourhood enrichment z-score, tumour cells with lymphocytes",
            },
            "zscore_tumour_tumour": {
                "title": "z tumour-tumour",
                "description": "Neighbourhood enrichment z-score, tumour cells with tumour cells",
            },
            "top_moran_gene": {"title": "Top gene", "description": "Reconstructed gene with the highest Moran's I"},
            "top_moran_i": {"title": "Moran's I", "description": "Moran's I of that gene"},
            "demo": {"title": "Demo", "description": "Predictions from a stand-in model, not the SHEST weights"},
            "notes": {"title": "Notes", "description": "Metrics not defined for this slide, and why"},
        },
    )

    contact = f"{params.contact_um:g}"
    infiltration_columns = [
        "tumour_regions",
        "tumour_area_mm2",
        "lymphocyte_density_tumour",
        "lymphocyte_density_margin",
        "lymphocyte_density_stroma",
        "lymphocytes_within_contact",
        "tumour_lymphocyte_distance_median_um",
        "demo",
        "notes",
    ]
    infiltration_values = {column: row.get(column) for column in infiltration_columns}
    infiltration_values.update(demo=result.demo, notes=result.notes.joined("infiltration"))
    density = {"suffix": " /mm²", "format": "{:,.1f}", "min": 0}
    write_mqc_table(
        infiltration_path,
        section_id="shest_infiltration",
        section_name="Immune infiltration",
        description=(
            f"{demo}Lymphocyte density (cells/mm²) inside tumour regions, in the {params.margin_um:g} µm margin "
            f"around them and in the stroma; share of lymphocytes within {contact} µm of a tumour cell; median "
            "distance from a lymphocyte to the nearest tumour cell. Tumour regions: at least "
            f"{params.tumour_min_cells} tumour cells, making up at least {params.tumour_min_fraction:g} of the cells, "
            f"within {params.tumour_radius_um:g} µm."
        ),
        rows={result.sample: infiltration_values},
        columns=infiltration_columns,
        headers={
            "tumour_regions": {"title": "Tumour regions", "format": "{:,.0f}"},
            "tumour_area_mm2": {"title": "Tumour area", "suffix": " mm²", "format": "{:,.3f}"},
            "lymphocyte_density_tumour": {"title": "Lymph. tumour", **density},
            "lymphocyte_density_margin": {"title": "Lymph. margin", **density},
            "lymphocyte_density_stroma": {"title": "Lymph. stroma", **density},
            "lymphocytes_within_contact": {
                "title": f"Lymph. ≤{contact} µm",
                "description": f"Share of lymphocytes within {contact} µm of a tumour cell",
                "min": 0,
                "max": 1,
            },
            "tumour_lymphocyte_distance_median_um": {"title": "Median dist.", "suffix": " µm", "format": "{:,.1f}"},
            "demo": {"title": "Demo", "description": "Predictions from a stand-in model, not the SHEST weights"},
            "notes": {"title": "Notes", "description": "Metrics not defined for this slide, and why"},
        },
    )


def _celltype_table(result: NicheResult) -> pd.DataFrame:
    counts = result.cells.counts()
    total = int(counts.sum())
    return pd.DataFrame(
        {
            "cell_type": counts.index.astype(str),
            "cells": counts.to_numpy(dtype=np.int64),
            "fraction": counts.to_numpy() / total if total else np.zeros(len(counts)),
        }
    )


def _empty_infiltration(result: NicheResult) -> pd.DataFrame:
    return pd.DataFrame(columns=["metric", "value", "unit", "note"])


def _pair_value(enrichment: pd.DataFrame, a: str, b: str) -> float | None:
    if enrichment.empty:
        return None
    match = enrichment[(enrichment["cell_type_a"] == a) & (enrichment["cell_type_b"] == b)]
    if match.empty:
        return None
    value = float(match["zscore"].iloc[0])
    return value if math.isfinite(value) else None


def _with_sample(table: pd.DataFrame, result: NicheResult) -> pd.DataFrame:
    table = table.reset_index(drop=True).copy()
    table.insert(0, "sample", result.sample)
    table["demo"] = result.demo
    return table
