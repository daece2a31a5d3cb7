"""All niche analyses of one slide, in order, with the edge cases decided in one place."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shest.niche.cells import AnalysisCells, select_cells
from shest.niche.enrichment import (
    CO_OCCURRENCE_COLUMNS,
    ENRICHMENT_COLUMNS,
    INTERACTION_COLUMNS,
    co_occurrence,
    interaction_counts,
    neighbourhood_enrichment,
)
from shest.niche.graph import SpatialGraph, build_graph
from shest.niche.h5ad import SlideCells
from shest.niche.infiltration import Infiltration, measure_infiltration
from shest.niche.moran import MORAN_COLUMNS, morans_i
from shest.niche.neighbourhoods import Niches, find_niches
from shest.niche.notes import Notes
from shest.niche.params import MIN_CELLS, NicheParams
from shest.niche.regions import Compartments, find_compartments

log = logging.getLogger(__name__)


@dataclass
class NicheResult:
    """Everything ``shest niche`` computed for one slide.

    An analysis that could not run leaves its table empty (and its matrix ``None``),
    and ``notes`` gives the reason.
    """

    sample: str
    demo: bool
    params: NicheParams
    notes: Notes
    cells: AnalysisCells
    n_input_cells: int
    graph: SpatialGraph | None = None
    enrichment: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ENRICHMENT_COLUMNS))
    zscore: np.ndarray | None = None
    enrichment_count: np.ndarray | None = None
    interactions: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=INTERACTION_COLUMNS))
    interaction_matrix: np.ndarray | None = None
    co_occurrence: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CO_OCCURRENCE_COLUMNS))
    co_occurrence_ratios: np.ndarray | None = None
    niches: Niches | None = None
    moran: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=MORAN_COLUMNS))
    compartments: Compartments | None = None
    infiltration: Infiltration | None = None


def analyse_slide(slide: SlideCells, sample: str, params: NicheParams) -> NicheResult:
    """Run every niche analysis on one slide and collect the results and notes.

    Parameters
    ----------
    slide
        The inference AnnData's cells, read by :func:`shest.niche.h5ad.read_slide_cells`.
    sample
        Sample name used in notes and tables.
    params
        Analysis settings.

    Notes
    -----
    With no analysed cell nothing is computed. Below ``MIN_CELLS`` cells only the
    counts, regions and infiltration metrics are computed. Each skipped analysis
    adds a note that names the reason.
    """
    notes = Notes(sample)
    if slide.demo:
        log.warning("%s: the input predictions come from a demo model; every output is marked as a demo.", sample)
    cells = select_cells(slide, params, notes)
    result = NicheResult(
        sample=sample, demo=slide.demo, params=params, notes=notes, cells=cells, n_input_cells=slide.n_cells
    )
    log.info(
        "%s: %d of %d cells analysed, types: %s",
        sample,
        cells.n_cells,
        slide.n_cells,
        {name: int(n) for name, n in cells.counts().items()},
    )

    if cells.n_cells == 0:
        if slide.n_cells == 0:
            message = f"{slide.path.name} contains no cells, so no niche metric is defined."
        else:
            message = "The slide has no analysed cells, so no niche metric is defined."
            message += " Every cell is unassigned; pass --keep-unassigned to analyse them."
        for analysis in ("graph", "enrichment", "co_occurrence", "niches", "moran", "infiltration"):
            notes.add(analysis, message)
        return result

    with _timed(result, "regions"):
        result.compartments = find_compartments(cells, params, notes)
        result.infiltration = measure_infiltration(cells, result.compartments, params.contact_um, notes)

    if cells.n_cells < MIN_CELLS:
        message = f"Only {cells.n_cells} analysed cells; spatial statistics need at least {MIN_CELLS}."
        for analysis in ("graph", "enrichment", "co_occurrence", "niches", "moran"):
            notes.add(analysis, message)
        return result

    # The graph comes first because it may exceed its size limit, which ends the run.
    with _timed(result, "graph"):
        result.graph = build_graph(cells.xy_um, params, notes)
    with _timed(result, "co_occurrence"):
        result.co_occurrence, result.co_occurrence_ratios = co_occurrence(cells, params.co_occurrence_um, notes)
    with _timed(result, "niches"):
        result.niches = find_niches(
            cells, params.n_niches, params.niche_neighbors, params.niche_radius_um, params.seed, notes
        )
    if result.graph is None:
        for analysis in ("enrichment", "moran"):
            notes.add(analysis, "Not computed because the spatial graph could not be built.")
        return result

    with _timed(result, "enrichment"):
        result.enrichment, result.zscore, result.enrichment_count = neighbourhood_enrichment(
            cells, result.graph, params.n_perms, params.seed, notes
        )
        result.interactions, result.interaction_matrix = interaction_counts(cells, result.graph)
    with _timed(result, "moran"):
        result.moran = morans_i(slide.path, cells.rows, slide.var_names, result.graph, notes)
    return result


class _timed:
    """Log the duration of one analysis. Durations stay out of the output files, so reruns write identical files."""

    def __init__(self, result: NicheResult, name: str) -> None:
        self.result = result
        self.name = name

    def __enter__(self) -> None:
        self.start = time.monotonic()

    def __exit__(self, *exc_info) -> None:
        elapsed = time.monotonic() - self.start
        log.debug(
            "%s: %s took %.1f s (peak RSS so far %.2f GiB)", self.result.sample, self.name, elapsed, _peak_rss_gib()
        )


def _peak_rss_gib() -> float:
    try:
        import resource
    except ImportError:  # not available on Windows
        return float("nan")
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
