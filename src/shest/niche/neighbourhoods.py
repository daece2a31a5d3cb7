"""Cellular neighbourhoods (niches): clusters of local cell-type compositions.

Each cell gets the composition of a window around it: the share of each cell type
among its k nearest cells (itself included) or among all cells within a radius.
k-means then groups the windows into niches, following the cellular-neighbourhood
analysis of Schürch et al. (Cell, 2020). Windows come from k-d tree queries, so the
cost grows with n log n.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shest.niche.cells import AnalysisCells
from shest.niche.notes import Notes

log = logging.getLogger(__name__)

# Rows compared when counting distinct window compositions. That many are enough to
# tell whether k-means can find the requested number of niches.
_DISTINCT_SAMPLE = 200_000
# Above this many cells k-means is fitted on a seeded random sample of this many
# windows and every cell is then assigned to the nearest centre. Compositions have
# one dimension per cell type, so the sample pins the centres down closely.
FIT_SAMPLE = 200_000
# Neighbour pairs per block of the kNN window query: about 500 MB of index, distance
# and code arrays.
_QUERY_PAIRS = 20_000_000


@dataclass
class Niches:
    """Niche label per analysed cell and the mean composition of each niche.

    ``labels`` is categorical with categories ``N1``, ``N2``, ... numbered by
    decreasing number of cells. ``composition`` has one row per niche with
    ``n_cells``, ``cell_fraction`` (share of analysed cells), ``dominant_cell_type``
    and one column per cell type holding the mean share of that type in the
    windows of the niche.
    """

    labels: pd.Categorical
    composition: pd.DataFrame
    window: str


def window_compositions(cells: AnalysisCells, n_neighbors: int, radius_um: float | None) -> tuple[np.ndarray, str]:
    """Return each cell's window composition (n_cells, n_types; rows sum to 1) and a description."""
    from scipy.spatial import cKDTree

    codes = cells.codes
    n_types = len(cells.categories)
    if radius_um is not None:
        counts = np.zeros((cells.n_cells, n_types), dtype=np.float64)
        for k in range(n_types):
            tree = cKDTree(cells.xy_um[codes == k])
            counts[:, k] = tree.query_ball_point(cells.xy_um, radius_um, return_length=True, workers=-1)
        window = f"cells within {radius_um:g} µm"
    else:
        k = min(n_neighbors, cells.n_cells)
        tree = cKDTree(cells.xy_um)
        counts = np.zeros((cells.n_cells, n_types), dtype=np.float64)
        # Cells are queried in blocks so that the (cells, k) neighbour arrays stay small.
        block = max(1, _QUERY_PAIRS // k)
        for start in range(0, cells.n_cells, block):
            stop = min(cells.n_cells, start + block)
            _, neighbours = tree.query(cells.xy_um[start:stop], k=k, workers=-1)
            neighbours = np.asarray(neighbours).reshape(stop - start, k)
            flat = np.arange(stop - start).repeat(k) * n_types + codes[neighbours.ravel()]
            counts[start:stop] = np.bincount(flat, minlength=(stop - start) * n_types).reshape(stop - start, n_types)
        window = f"{k} nearest cells"
    return counts / counts.sum(axis=1, keepdims=True), window


def find_niches(
    cells: AnalysisCells,
    n_niches: int,
    n_neighbors: int,
    radius_um: float | None,
    seed: int,
    notes: Notes,
) -> Niches:
    """Cluster the window compositions into ``n_niches`` niches with seeded k-means.

    k-means (scikit-learn, 10 initialisations) is fitted on at most
    :data:`FIT_SAMPLE` windows drawn with ``seed`` and then assigns every cell.
    Fewer niches are formed, with a note, when there are fewer distinct window
    compositions than requested (for example a slide with one cell type).
    """
    from sklearn.cluster import KMeans

    compositions, window = window_compositions(cells, n_neighbors, radius_um)
    n_distinct = _count_distinct(compositions, seed)
    n_clusters = min(n_niches, n_distinct)
    if n_clusters < n_niches:
        notes.add(
            "niches",
            f"Only {n_distinct} distinct window compositions ({window}), so {n_clusters} niches are formed "
            f"instead of {n_niches}.",
        )
    if n_clusters > 1:
        model = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
        if cells.n_cells > FIT_SAMPLE:
            fit_rows = np.sort(np.random.default_rng(seed).choice(cells.n_cells, FIT_SAMPLE, replace=False))
            model.fit(compositions[fit_rows])
        else:
            model.fit(compositions)
        raw = model.predict(compositions)
    else:
        raw = np.zeros(cells.n_cells, dtype=np.int64)

    # Number niches by decreasing size so that N1 is the most common one.
    sizes = np.bincount(raw, minlength=n_clusters)
    order = np.lexsort((np.arange(n_clusters), -sizes))
    rank = np.empty(n_clusters, dtype=np.int64)
    rank[order] = np.arange(n_clusters)
    names = [f"N{i + 1}" for i in range(n_clusters)]
    labels = pd.Categorical.from_codes(rank[raw], categories=names)
    composition = _composition_table(compositions, labels, cells.categories)
    log.info("Niches: %d niches from windows of %s", n_clusters, window)
    return Niches(labels=labels, composition=composition, window=window)


def _count_distinct(compositions: np.ndarray, seed: int) -> int:
    rows = compositions
    if rows.shape[0] > _DISTINCT_SAMPLE:
        pick = np.random.default_rng(seed).choice(rows.shape[0], _DISTINCT_SAMPLE, replace=False)
        rows = rows[pick]
    return int(np.unique(np.round(rows, 6), axis=0).shape[0])


def _composition_table(compositions: np.ndarray, labels: pd.Categorical, categories: list[str]) -> pd.DataFrame:
    codes = np.asarray(labels.codes)
    n_niches = len(labels.categories)
    sizes = np.bincount(codes, minlength=n_niches)
    sums = np.column_stack(
        [np.bincount(codes, weights=compositions[:, t], minlength=n_niches) for t in range(compositions.shape[1])]
    )
    means = sums / np.maximum(sizes, 1)[:, None]
    table = pd.DataFrame(means, columns=categories)
    table.insert(0, "dominant_cell_type", [categories[i] for i in means.argmax(axis=1)])
    table.insert(0, "cell_fraction", sizes / max(1, sizes.sum()))
    table.insert(0, "n_cells", sizes)
    table.insert(0, "niche", list(labels.categories))
    return table
