"""Immune infiltration: lymphocyte densities per compartment and tumour-lymphocyte distances."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shest.niche.cells import AnalysisCells
from shest.niche.notes import Notes
from shest.niche.regions import COMPARTMENTS, Compartments

INFILTRATION_COLUMNS = ["metric", "value", "unit", "note"]
DISTANCE_COLUMNS = ["bin_start_um", "bin_end_um", "lymphocytes", "fraction"]
DISTANCE_BIN_UM = 10.0
DISTANCE_MAX_UM = 500.0
QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)


@dataclass
class Infiltration:
    """Infiltration metrics of one slide.

    ``metrics`` is a long table (``metric``, ``value``, ``unit``, ``note``); a metric
    that the slide leaves undefined has an empty value and a note saying why.
    ``distance_histogram`` counts lymphocytes by distance to the nearest tumour cell
    in 10 µm bins up to 500 µm, then one open bin (no rows when the distance is
    undefined). ``distance_to_tumour_um`` contains
    that distance for every analysed cell (NaN when the slide has no tumour cell).
    """

    metrics: pd.DataFrame
    distance_histogram: pd.DataFrame
    distance_to_tumour_um: np.ndarray
    lymphocyte_distances_um: np.ndarray

    def value(self, metric: str) -> float:
        """Return one metric's value (NaN when undefined)."""
        row = self.metrics.loc[self.metrics["metric"] == metric, "value"]
        return float(row.iloc[0]) if len(row) else float("nan")


def measure_infiltration(
    cells: AnalysisCells, compartments: Compartments, contact_um: float, notes: Notes
) -> Infiltration:
    """Measure lymphocyte densities inside tumour, margin and stroma, and distances to tumour cells.

    Densities are lymphocytes per mm² of the compartment's area (see
    :mod:`shest.niche.regions`). The contact fraction is the share of lymphocytes
    whose nearest tumour cell is at most ``contact_um`` away.
    """
    from scipy.spatial import cKDTree

    tumour = cells.mask(cells.tumour_type)
    lymphocyte = cells.mask(cells.lymphocyte_type)
    n_tumour = int(tumour.sum())
    n_lymph = int(lymphocyte.sum())
    rows: list[tuple[str, float, str, str]] = []

    def add(metric: str, value: float | None, unit: str, note: str = "") -> None:
        rows.append((metric, float("nan") if value is None else float(value), unit, note))

    add("analysed_cells", cells.n_cells, "cells")
    add("tumour_cells", n_tumour, "cells")
    add("lymphocytes", n_lymph, "cells")
    if n_tumour == 0:
        notes.add(
            "infiltration", f"No {cells.tumour_type} cells: there is no tumour region, margin or tumour distance."
        )
    if n_lymph == 0:
        notes.add(
            "infiltration", f"No {cells.lymphocyte_type} cells: lymphocyte densities are 0 and distances are undefined."
        )

    add("tissue_area", compartments.area_mm2("tissue"), "mm2")
    add("tumour_regions", compartments.n_tumour_regions, "regions")
    if n_tumour and compartments.n_tumour_regions == 0:
        notes.add(
            "infiltration",
            f"{n_tumour} tumour cells but no area meets the tumour-region rule; "
            "tumour and margin densities are undefined.",
        )
    compartment_codes = np.asarray(compartments.cell_compartment.codes)
    for code, name in enumerate(COMPARTMENTS):
        area = compartments.area_mm2(name)
        count = int(np.sum(lymphocyte & (compartment_codes == code)))
        add(f"{name}_area", area, "mm2")
        add(f"lymphocytes_{name}", count, "cells")
        if area > 0:
            add(f"lymphocyte_density_{name}", count / area, "cells/mm2")
        else:
            add(f"lymphocyte_density_{name}", None, "cells/mm2", f"undefined: the slide has no {name} area")
    tissue_area = compartments.area_mm2("tissue")
    add("lymphocyte_density_tissue", n_lymph / tissue_area if tissue_area > 0 else None, "cells/mm2")

    density_tumour = _value(rows, "lymphocyte_density_tumour")
    density_stroma = _value(rows, "lymphocyte_density_stroma")
    if np.isfinite(density_tumour) and np.isfinite(density_stroma) and density_stroma > 0:
        add("lymphocyte_density_ratio_tumour_to_stroma", density_tumour / density_stroma, "ratio")
    else:
        add(
            "lymphocyte_density_ratio_tumour_to_stroma",
            None,
            "ratio",
            "undefined: needs a tumour density and a non-zero stroma density",
        )

    distance_to_tumour = np.full(cells.n_cells, np.nan)
    if n_tumour:
        distance_to_tumour, _ = cKDTree(cells.xy_um[tumour]).query(cells.xy_um, k=1, workers=-1)
        distance_to_tumour = np.asarray(distance_to_tumour, dtype=np.float64)
    lymph_distances = distance_to_tumour[lymphocyte]

    contact_metric = f"lymphocytes_within_{contact_um:g}um_of_tumour"
    if n_lymph == 0:
        add(contact_metric, None, "fraction", "undefined: no lymphocytes")
    elif n_tumour == 0:
        add(contact_metric, 0.0, "fraction", "no tumour cells, so no lymphocyte is near one")
    else:
        add(contact_metric, float(np.mean(lymph_distances <= contact_um)), "fraction")

    distance_note = "" if n_tumour and n_lymph else "undefined: needs tumour cells and lymphocytes"
    add("tumour_lymphocyte_distance_mean", np.mean(lymph_distances) if not distance_note else None, "um", distance_note)
    for q in QUANTILES:
        value = np.quantile(lymph_distances, q) if not distance_note else None
        add(f"tumour_lymphocyte_distance_p{round(q * 100):02d}", value, "um", distance_note)

    histogram = _distance_histogram(lymph_distances if not distance_note else np.empty(0))
    return Infiltration(
        metrics=pd.DataFrame(rows, columns=INFILTRATION_COLUMNS),
        distance_histogram=histogram,
        distance_to_tumour_um=distance_to_tumour,
        lymphocyte_distances_um=lymph_distances if not distance_note else np.empty(0),
    )


def _value(rows: list[tuple[str, float, str, str]], metric: str) -> float:
    for name, value, _, _ in rows:
        if name == metric:
            return value
    return float("nan")


def _distance_histogram(distances: np.ndarray) -> pd.DataFrame:
    edges = np.append(np.arange(0.0, DISTANCE_MAX_UM + DISTANCE_BIN_UM / 2, DISTANCE_BIN_UM), np.inf)
    if distances.size == 0:
        return pd.DataFrame(columns=DISTANCE_COLUMNS)
    counts, _ = np.histogram(distances, bins=edges)
    fraction = counts / distances.size
    return pd.DataFrame(
        {"bin_start_um": edges[:-1], "bin_end_um": edges[1:], "lymphocytes": counts, "fraction": fraction}
    )
