"""Spatial graphs (squidpy) on µm coordinates, and their edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from shest.errors import InputError
from shest.niche.graph import build_graph, expand_to_all_cells
from shest.niche.notes import Notes
from shest.niche.params import NicheParams


@pytest.fixture(scope="module")
def points():
    return np.random.default_rng(0).uniform(0.0, 500.0, size=(800, 2))


def test_delaunay_drops_long_edges(points):
    graph = build_graph(points, NicheParams(graph="delaunay", max_edge_um=20.0), Notes("test"))
    assert graph.distances.data.max() <= 20.0


def test_delaunay_is_symmetric(points):
    graph = build_graph(points, NicheParams(graph="delaunay"), Notes("test"))
    assert (graph.connectivities != graph.connectivities.T).nnz == 0


def test_radius_graph_matches_kdtree(points):
    from scipy.spatial import cKDTree

    graph = build_graph(points, NicheParams(graph="radius", radius_um=30.0), Notes("test"))
    expected_pairs = len(cKDTree(points).query_pairs(30.0))
    assert graph.summary()["n_edges"] == expected_pairs


def test_knn_graph_degree(points):
    graph = build_graph(points, NicheParams(graph="knn", n_neighbors=4), Notes("test"))
    assert np.all(np.diff(graph.connectivities.indptr) == 4)


def test_knn_clamped_on_few_cells():
    notes = Notes("test")
    graph = build_graph(
        np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]), NicheParams(graph="knn", n_neighbors=6), notes
    )
    assert graph.params["n_neighbors"] == 2
    assert "k = 2" in notes.joined("graph")


def test_collinear_cells_give_note_not_crash():
    notes = Notes("test")
    line = np.column_stack([np.arange(20.0) * 10.0, np.zeros(20)])
    graph = build_graph(line, NicheParams(graph="delaunay"), notes)
    assert graph is None
    assert "--graph radius" in notes.joined("graph")


def test_two_cells_no_delaunay():
    notes = Notes("test")
    assert build_graph(np.array([[0.0, 0.0], [5.0, 5.0]]), NicheParams(), notes) is None
    assert "at least 3 cells" in notes.joined("graph")


def test_expand_to_all_cells_keeps_edges():
    matrix = sparse.csr_matrix(np.array([[0, 1.0], [1.0, 0]]))
    expanded = expand_to_all_cells(matrix, np.array([1, 3]), 5)
    assert expanded.shape == (5, 5)
    assert expanded[1, 3] == 1.0
    assert expanded.nnz == 2


def test_unknown_graph_type_rejected():
    with pytest.raises(InputError, match="Unknown graph type"):
        NicheParams(graph="gabriel")


def test_negative_margin_rejected():
    with pytest.raises(InputError, match="--margin-um"):
        NicheParams(margin_um=-5.0)
