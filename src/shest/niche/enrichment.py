"""Cell-type neighbourhood statistics: enrichment z-scores, interaction counts, co-occurrence.

Enrichment and interaction counts run squidpy on the sparse spatial graph; their cost
grows with the number of edges. Co-occurrence is counted here with k-d trees instead
of :func:`squidpy.gr.co_occurrence`, which in squidpy 1.8 visits every pair of cells
(quadratic: about 10^12 pairs at one million cells). The ratio is the one squidpy
defines, so both agree on small inputs.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pandas as pd

from shest.niche.cells import AnalysisCells
from shest.niche.graph import SpatialGraph, import_squidpy, quiet_squidpy
from shest.niche.notes import Notes

log = logging.getLogger(__name__)

ENRICHMENT_COLUMNS = ["cell_type_a", "cell_type_b", "zscore", "observed_edges", "note"]
INTERACTION_COLUMNS = ["cell_type_a", "cell_type_b", "edges", "fraction_of_a_edges"]
CO_OCCURRENCE_COLUMNS = ["cell_type_a", "cell_type_b", "distance_um", "ratio", "pairs", "note"]


def _graph_adata(cells: AnalysisCells, graph: SpatialGraph):
    import anndata as ad

    adata = ad.AnnData(obs=pd.DataFrame({"cell_type": cells.labels}, index=pd.RangeIndex(cells.n_cells).astype(str)))
    adata.obsp["spatial_connectivities"] = graph.connectivities
    return adata


def neighbourhood_enrichment(
    cells: AnalysisCells, graph: SpatialGraph, n_perms: int, seed: int, notes: Notes
) -> tuple[pd.DataFrame, np.ndarray | None, np.ndarray | None]:
    """Compute squidpy's neighbourhood enrichment z-score for every pair of cell types.

    The z-score compares the number of graph edges between types a and b with the
    same count after ``n_perms`` random permutations of the labels over the cells.
    Permutations run in one process so that a seed gives the same z-scores on any
    machine.

    Returns
    -------
    table, zscore, count
        A long table (one row per ordered pair of types) and squidpy's square
        z-score and edge-count matrices in category order. The matrices are ``None``
        when the test cannot run (fewer than two cell types or no edges).
    """
    sq = import_squidpy()

    categories = cells.categories
    if len(categories) < 2:
        notes.add(
            "enrichment",
            "Neighbourhood enrichment needs at least two cell types; the slide has only "
            f"{', '.join(categories) or 'none'}.",
        )
        return pd.DataFrame(columns=ENRICHMENT_COLUMNS), None, None
    if graph.connectivities.nnz == 0:
        notes.add("enrichment", "Neighbourhood enrichment was not computed because the spatial graph has no edges.")
        return pd.DataFrame(columns=ENRICHMENT_COLUMNS), None, None

    adata = _graph_adata(cells, graph)
    start = time.monotonic()
    log.info("Neighbourhood enrichment: %d permutations over %d cells", n_perms, cells.n_cells)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"), quiet_squidpy():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = sq.gr.nhood_enrichment(
            adata,
            cluster_key="cell_type",
            n_perms=n_perms,
            seed=seed,
            copy=True,
            n_jobs=1,
            show_progress_bar=False,
        )
    zscore = np.asarray(result[0], dtype=np.float64)
    count = np.asarray(result[1], dtype=np.int64)
    log.debug("Neighbourhood enrichment took %.1f s", time.monotonic() - start)

    rows = []
    undefined = 0
    for i, a in enumerate(categories):
        for j, b in enumerate(categories):
            z = zscore[i, j]
            note = ""
            if not np.isfinite(z):
                undefined += 1
                note = "undefined: the edge count is the same under every permutation"
                z = np.nan
            rows.append((a, b, z, int(count[i, j]), note))
    if undefined:
        notes.add("enrichment", f"{undefined} type pairs have no defined z-score (the edge count never varies).")
    return pd.DataFrame(rows, columns=ENRICHMENT_COLUMNS), zscore, count


def interaction_counts(cells: AnalysisCells, graph: SpatialGraph) -> tuple[pd.DataFrame, np.ndarray]:
    """Count graph edges between every pair of cell types with squidpy.

    An edge between cells i and j is counted from both ends in a symmetric graph,
    so ``edges`` for (a, b) equals ``edges`` for (b, a). ``fraction_of_a_edges`` is
    the share of the edges leaving type a that reach type b (0 when a has no edge).
    """
    sq = import_squidpy()

    categories = cells.categories
    if len(categories) == 0 or graph.connectivities.nnz == 0:
        matrix = np.zeros((len(categories), len(categories)), dtype=np.int64)
    else:
        adata = _graph_adata(cells, graph)
        with quiet_squidpy():
            matrix = np.asarray(sq.gr.interaction_matrix(adata, cluster_key="cell_type", copy=True)).astype(np.int64)
    totals = matrix.sum(axis=1)
    rows = []
    for i, a in enumerate(categories):
        for j, b in enumerate(categories):
            fraction = matrix[i, j] / totals[i] if totals[i] else 0.0
            rows.append((a, b, int(matrix[i, j]), float(fraction)))
    return pd.DataFrame(rows, columns=INTERACTION_COLUMNS), matrix


def co_occurrence(
    cells: AnalysisCells, distances_um: tuple[float, ...], notes: Notes
) -> tuple[pd.DataFrame, np.ndarray]:
    """Compute co-occurrence ratios of every pair of cell types within each distance.

    For a distance d, let C[a, b] be the number of ordered pairs of distinct cells of
    types a and b at most d apart, R[a] the row sums of C and T their total. The ratio

        ratio(b | a) = (C[a, b] / R[a]) / (R[b] / T)

    is the probability that a neighbour of an a-cell within d is of type b, over the
    probability that any neighbour within d is of type b: 1 means no association,
    above 1 attraction, below 1 avoidance. It equals squidpy's ``co_occurrence``
    value for the interval (0, d]. The pairs are counted with
    :meth:`scipy.spatial.cKDTree.count_neighbors` between one tree per type.

    Returns
    -------
    table, ratios
        A long table (one row per type pair and distance) and the ratios as an array
        of shape (n_types, n_types, n_distances). Undefined ratios are NaN in the
        array, and empty with a note in the table.
    """
    from scipy.spatial import cKDTree

    categories = cells.categories
    n_types = len(categories)
    radii = np.asarray(sorted(distances_um), dtype=np.float64)
    codes = cells.codes
    trees = [cKDTree(cells.xy_um[codes == k]) for k in range(n_types)]
    sizes = np.array([tree.n for tree in trees])

    pair_counts = np.zeros((n_types, n_types, radii.size), dtype=np.float64)
    for a in range(n_types):
        for b in range(a, n_types):
            counted = np.asarray(trees[a].count_neighbors(trees[b], radii), dtype=np.float64)
            if a == b:
                counted = counted - sizes[a]  # each cell pairs with itself at distance 0
            pair_counts[a, b] = counted
            pair_counts[b, a] = counted

    row_sums = pair_counts.sum(axis=1)
    totals = row_sums.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = pair_counts * totals[None, None, :] / (row_sums[:, None, :] * row_sums[None, :, :])

    rows = []
    undefined_distances = set()
    for r, d in enumerate(radii):
        for a in range(n_types):
            for b in range(n_types):
                value = ratios[a, b, r]
                note = ""
                if not np.isfinite(value):
                    value = np.nan
                    lonely = categories[a] if row_sums[a, r] == 0 else categories[b]
                    note = f"undefined: no {lonely} cell has a neighbour within {d:g} µm"
                    undefined_distances.add(float(d))
                rows.append((categories[a], categories[b], float(d), value, int(pair_counts[a, b, r]), note))
    ratios[~np.isfinite(ratios)] = np.nan
    if undefined_distances:
        listed = ", ".join(f"{d:g}" for d in sorted(undefined_distances))
        notes.add(
            "co_occurrence", f"Some co-occurrence ratios are undefined at {listed} µm (types without neighbours there)."
        )
    return pd.DataFrame(rows, columns=CO_OCCURRENCE_COLUMNS), ratios
