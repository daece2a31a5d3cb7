"""Spatially variable reconstructed genes: Moran's I on the spatial graph.

The counts in ``X`` are normalised in a copy, one block of genes at a time. Each
cell's counts are scaled to the median total count of the cells and then
log1p-transformed, as scanpy's ``normalize_total`` and ``log1p`` do, with the totals
taken over all genes. ``X`` itself is never changed.

Moran's I uses the row-normalised graph weights W, as
:func:`squidpy.gr.spatial_autocorr` does by default, and its p-value the
normality approximation (Cliff and Ord, 1981) with squidpy's one-sided convention.
The statistic is computed for a whole block of genes at once, as
``sum(Z * (W @ Z)) / sum(Z * Z)`` with one sparse product. squidpy instead loops over
genes with scanpy's ``morans_i``, which took about 15 ms per gene at 100,000 cells on
a 2-core machine, against about 7 ms here. A test checks that both give the same
values. The Benjamini-Hochberg correction is applied over all tested genes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from shest.logs import progress
from shest.niche.graph import SpatialGraph
from shest.niche.h5ad import ExpressionReader
from shest.niche.notes import Notes

log = logging.getLogger(__name__)

MORAN_COLUMNS = ["rank", "gene", "morans_i", "pval_norm", "pval_norm_fdr_bh", "var_norm"]
# Memory of one block of normalised values (float64). Reading the block and the
# product W @ Z need about as much again each.
BLOCK_BYTES = 128 * 1024**2


def morans_i(
    path: str | Path,
    rows: np.ndarray,
    var_names: pd.Index,
    graph: SpatialGraph,
    notes: Notes,
) -> pd.DataFrame:
    """Compute Moran's I of every non-constant gene over the analysed cells.

    Parameters
    ----------
    path
        The input ``.h5ad``; ``X`` is read from it block by block.
    rows
        Rows of the analysed cells in ``X`` (the order of the graph's cells).
    var_names
        Gene names of ``X``.

    Returns
    -------
    pandas.DataFrame
        One row per tested gene sorted by decreasing Moran's I, with columns
        :data:`MORAN_COLUMNS`. Empty when no gene could be tested.
    """
    from scipy.stats import false_discovery_control, norm

    empty = pd.DataFrame(columns=MORAN_COLUMNS)
    if graph.connectivities.nnz == 0:
        notes.add("moran", "Moran's I was not computed because the spatial graph has no edges.")
        return empty

    n_cells = rows.size
    weights = row_normalised(graph.connectivities)
    expected, variance = moran_null_moments(weights)
    # A graph that joins every cell to every other (or nearly so) leaves no spatial
    # contrast: every gene then scores -1/(n-1) and the null variance is rounding noise.
    if not variance > 1e-12:
        notes.add(
            "moran",
            f"Moran's I is undefined here: the spatial graph joins nearly every one of the {n_cells} analysed cells "
            "to every other, so no gene can cluster. Use a smaller --radius-um or --n-neighbors, or the Delaunay "
            "graph.",
        )
        return empty
    scale_factor = n_cells / weights.sum()
    block = max(1, BLOCK_BYTES // (8 * max(n_cells, 1)))
    genes: list[str] = []
    scores: list[np.ndarray] = []
    constant = 0
    with ExpressionReader(path, rows) as reader:
        if reader.n_genes == 0:
            notes.add("moran", "The AnnData has no genes in X, so Moran's I was not computed.")
            return empty
        if len(var_names) != reader.n_genes:
            notes.add(
                "moran",
                f"X has {reader.n_genes} gene columns but var has {len(var_names)} names, so Moran's I was not "
                "computed; re-run `shest infer` to write a consistent AnnData.",
            )
            return empty
        totals = np.zeros(n_cells, dtype=np.float64)
        for start in range(0, reader.n_genes, block):
            totals += reader.block(start, min(start + block, reader.n_genes)).sum(axis=1)
        target = float(np.median(totals[totals > 0])) if np.any(totals > 0) else 1.0
        scale = np.divide(target, totals, out=np.zeros_like(totals), where=totals > 0)

        starts = range(0, reader.n_genes, block)
        for start in progress(starts, desc="Moran's I", unit="gene block", logger=log):
            stop = min(start + block, reader.n_genes)
            values = reader.block(start, stop)
            values *= scale[:, None]
            np.log1p(values, out=values)
            varying = values.max(axis=0) > values.min(axis=0)
            constant += int((~varying).sum())
            if not varying.any():
                continue
            centred = values if varying.all() else values[:, varying]
            centred -= centred.mean(axis=0)
            lagged = weights @ centred
            numerator = np.einsum("ij,ij->j", centred, lagged)
            denominator = np.einsum("ij,ij->j", centred, centred)
            scores.append(scale_factor * numerator / denominator)
            genes.extend(var_names[start:stop][varying].astype(str))

    if constant:
        notes.add(
            "moran", f"{constant} genes have the same normalised value in every analysed cell and were not tested."
        )
    if not scores:
        notes.add("moran", "No gene varies across the analysed cells, so Moran's I was not computed.")
        return empty

    score = np.concatenate(scores)
    z = (score - expected) / np.sqrt(variance)
    pvalues = norm.sf(np.abs(z))
    result = pd.DataFrame(
        {
            "gene": genes,
            "morans_i": score,
            "pval_norm": pvalues,
            "pval_norm_fdr_bh": false_discovery_control(pvalues, method="bh"),
            "var_norm": variance,
        }
    )
    result = result.sort_values(["morans_i", "gene"], ascending=[False, True], kind="stable").reset_index(drop=True)
    result["rank"] = np.arange(1, len(result) + 1)
    return result[MORAN_COLUMNS]


def row_normalised(connectivities: sparse.csr_matrix) -> sparse.csr_matrix:
    """Return the graph weights scaled so that every row with an edge sums to 1."""
    weights = sparse.csr_matrix(connectivities, dtype=np.float64, copy=True)
    sums = np.asarray(weights.sum(axis=1)).ravel()
    inverse = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sparse.csr_matrix(sparse.diags(inverse) @ weights)


def moran_null_moments(weights: sparse.csr_matrix) -> tuple[float, float]:
    """Return the expectation and normality-approximation variance of Moran's I for ``weights``.

    E[I] = -1 / (n - 1) and Var[I] = (n² S1 - n S2 + 3 S0²) / ((n² - 1) S0²) - E[I]², with
    S0 the sum of weights, S1 = ½ Σ (w_ij + w_ji)² and S2 = Σ_i (row sum + column sum)².
    """
    n = weights.shape[0]
    s0 = float(weights.sum())
    symmetric = weights + weights.T
    s1 = float(symmetric.multiply(symmetric).sum()) / 2.0
    s2 = float(np.sum((np.asarray(weights.sum(axis=1)).ravel() + np.asarray(weights.sum(axis=0)).ravel()) ** 2))
    expected = -1.0 / (n - 1)
    variance = (n * n * s1 - n * s2 + 3 * s0 * s0) / ((n - 1) * (n + 1) * s0 * s0) - expected * expected
    return expected, variance
