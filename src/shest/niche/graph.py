"""Spatial graph of the analysed cells, built with squidpy on µm coordinates.

All three builders are sparse: Delaunay triangulation (scipy/Qhull, about 3 edges
per cell), a radius graph and a k-nearest-neighbour graph (both scikit-learn tree
queries). No all-pairs distance matrix is formed.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from shest.errors import InputError
from shest.niche.notes import Notes
from shest.niche.params import NicheParams

log = logging.getLogger(__name__)

# Maximum number of stored neighbour pairs in a radius or kNN graph. squidpy 1.8 peaks at about
# 100 bytes per pair while it builds a radius graph (measured on 50,000 cells), so
# this bounds the build to about 5 GB. A Delaunay graph stores about 6 pairs per cell.
MAX_GRAPH_PAIRS = 50_000_000
# Share of analysed cells without an edge above which a note is written. A few cells
# beyond --max-edge-um are normal at tissue edges.
ISOLATED_NOTE_FRACTION = 0.05


@dataclass
class SpatialGraph:
    """Sparse spatial graph over the analysed cells.

    ``connectivities`` is 1 for each edge and ``distances`` is its length in µm. Both
    are CSR matrices of shape (n_cells, n_cells). The Delaunay and radius graphs are
    symmetric, while the kNN graph is directed (each cell points to its k nearest
    cells), as in squidpy.
    """

    connectivities: sparse.csr_matrix
    distances: sparse.csr_matrix
    params: dict

    @property
    def n_cells(self) -> int:
        return int(self.connectivities.shape[0])

    def summary(self) -> dict:
        """Return edge count, mean degree and the number of cells without an edge."""
        degree = np.diff(self.connectivities.indptr)
        symmetric = self.params.get("kind") != "knn"
        n_edges = int(self.connectivities.nnz // 2) if symmetric else int(self.connectivities.nnz)
        return {
            "n_edges": n_edges,
            "mean_degree": float(degree.mean()) if degree.size else 0.0,
            "isolated_cells": int(np.sum(degree == 0)),
        }


def import_squidpy():
    """Import squidpy without the docstring warnings its dependencies raise at import time."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", FutureWarning)
        import squidpy as sq
    return sq


@contextlib.contextmanager
def quiet_squidpy() -> Iterator[None]:
    """Silence squidpy's own progress messages unless SHEST logs at DEBUG level.

    squidpy reports through scanpy's settings and through the ``spatialdata._logging``
    logger, which has its own console handler; both are restored on exit.
    """
    import scanpy as sc

    if logging.getLogger("shest").isEnabledFor(logging.DEBUG):
        yield
        return
    spatialdata_log = logging.getLogger("spatialdata._logging")
    previous = sc.settings.verbosity, spatialdata_log.level
    sc.settings.verbosity = 0
    spatialdata_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        sc.settings.verbosity = previous[0]
        spatialdata_log.setLevel(previous[1])


def build_graph(xy_um: np.ndarray, params: NicheParams, notes: Notes) -> SpatialGraph | None:
    """Build the spatial graph chosen by ``params.graph`` with squidpy.

    Returns ``None``, with a note, when the graph cannot be built (fewer than 3
    cells, or all cells on one line for the Delaunay triangulation).

    Raises
    ------
    InputError
        A radius or kNN graph would hold more than :data:`MAX_GRAPH_PAIRS` pairs.
    """
    import anndata as ad
    from scipy.spatial import QhullError

    sq = import_squidpy()

    n_cells = xy_um.shape[0]
    adata = ad.AnnData(obsm={"spatial": np.ascontiguousarray(xy_um, dtype=np.float64)})
    graph_params: dict = {"kind": params.graph, "units": "um"}
    with warnings.catch_warnings(), quiet_squidpy():
        warnings.simplefilter("ignore", FutureWarning)
        if params.graph == "delaunay":
            if n_cells < 3:
                notes.add("graph", f"A Delaunay graph needs at least 3 cells, found {n_cells}.")
                return None
            graph_params["max_edge_um"] = params.max_edge_um
            try:
                _delaunay(sq, adata, params.max_edge_um)
            except QhullError as exc:
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                notes.add(
                    "graph",
                    f"The Delaunay triangulation failed ({first_line}); the cells may lie on one line. "
                    "Use --graph radius or --graph knn.",
                )
                return None
        elif params.graph == "radius":
            graph_params["radius_um"] = params.radius_um
            _check_radius_pairs(xy_um, params.radius_um)
            _radius(sq, adata, params.radius_um)
        else:
            if n_cells < 2:
                notes.add("graph", f"A kNN graph needs at least 2 cells, found {n_cells}.")
                return None
            k = params.n_neighbors
            if k > n_cells - 1:
                k = n_cells - 1
                notes.add("graph", f"Only {n_cells} cells: the kNN graph uses k = {k} instead of {params.n_neighbors}.")
            graph_params["n_neighbors"] = k
            if n_cells * k > MAX_GRAPH_PAIRS:
                raise InputError(
                    f"The kNN graph would hold {n_cells * k:,} neighbour pairs ({n_cells:,} cells x --n-neighbors "
                    f"{k}), above the limit of {MAX_GRAPH_PAIRS:,}. Give a smaller --n-neighbors or use "
                    "--graph delaunay."
                )
            _knn(sq, adata, k)

    connectivities = sparse.csr_matrix(adata.obsp["spatial_connectivities"], dtype=np.float32)
    distances = sparse.csr_matrix(adata.obsp["spatial_distances"], dtype=np.float64)
    connectivities.eliminate_zeros()
    graph = SpatialGraph(connectivities=connectivities, distances=distances, params=graph_params)
    summary = graph.summary()
    log.info(
        "Spatial graph (%s): %d cells, %d edges, mean degree %.2f, %d cells without an edge",
        params.graph,
        n_cells,
        summary["n_edges"],
        summary["mean_degree"],
        summary["isolated_cells"],
    )
    if summary["n_edges"] == 0:
        notes.add("graph", "The spatial graph has no edges; lengthen --max-edge-um or --radius-um.")
    elif summary["isolated_cells"] > ISOLATED_NOTE_FRACTION * n_cells:
        notes.add(
            "graph",
            f"{summary['isolated_cells']} of {n_cells} analysed cells have no edge in the {params.graph} graph, so "
            "enrichment and Moran's I describe only the others. Cells at the same position, coordinates far from "
            "the origin, or a short --max-edge-um or --radius-um cause this.",
        )
    return graph


def _check_radius_pairs(xy_um: np.ndarray, radius_um: float) -> None:
    """Raise InputError when a radius graph would hold more than :data:`MAX_GRAPH_PAIRS` pairs.

    The pairs are counted with a dual-tree k-d tree query, which needs no memory per pair.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(xy_um)
    n_pairs = int(tree.count_neighbors(tree, radius_um)) - xy_um.shape[0]  # minus each cell paired with itself
    if n_pairs > MAX_GRAPH_PAIRS:
        raise InputError(
            f"The radius graph would hold {n_pairs:,} neighbour pairs at --radius-um {radius_um:g} "
            f"(a mean of {n_pairs / xy_um.shape[0]:,.0f} neighbours per cell), above the limit of "
            f"{MAX_GRAPH_PAIRS:,}. Give a smaller --radius-um or use --graph delaunay."
        )


def _delaunay(sq, adata, max_edge_um: float) -> None:
    # squidpy >= 1.8.2 has one function per builder; older versions take flags.
    if hasattr(sq.gr, "spatial_neighbors_delaunay"):
        sq.gr.spatial_neighbors_delaunay(adata, radius=(0.0, max_edge_um))
    else:
        sq.gr.spatial_neighbors(adata, coord_type="generic", delaunay=True, radius=(0.0, max_edge_um))


def _radius(sq, adata, radius_um: float) -> None:
    if hasattr(sq.gr, "spatial_neighbors_radius"):
        sq.gr.spatial_neighbors_radius(adata, radius=radius_um)
    else:
        sq.gr.spatial_neighbors(adata, coord_type="generic", radius=radius_um)


def _knn(sq, adata, k: int) -> None:
    if hasattr(sq.gr, "spatial_neighbors_knn"):
        sq.gr.spatial_neighbors_knn(adata, n_neighs=k)
    else:
        sq.gr.spatial_neighbors(adata, coord_type="generic", n_neighs=k)


def expand_to_all_cells(matrix: sparse.csr_matrix, rows: np.ndarray, n_total: int) -> sparse.csr_matrix:
    """Place a graph over a subset of cells into an (n_total, n_total) matrix; other cells get no edges."""
    coo = matrix.tocoo()
    expanded = sparse.csr_matrix(
        (coo.data, (rows[coo.row], rows[coo.col])), shape=(n_total, n_total), dtype=matrix.dtype
    )
    expanded.sort_indices()
    return expanded
