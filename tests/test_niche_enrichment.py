"""Neighbourhood enrichment, interaction counts and co-occurrence on layouts with known expected values."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from shest.niche.cells import select_cells
from shest.niche.enrichment import co_occurrence, interaction_counts, neighbourhood_enrichment
from shest.niche.graph import build_graph, import_squidpy
from shest.niche.h5ad import read_slide_cells
from shest.niche.notes import Notes
from shest.niche.params import NicheParams
from shest.niche.synthetic import build_anndata, island_layout, random_layout

# Islands hold tumour cells and all the lymphocytes; the stroma has none.
LYMPHOCYTES_IN_ISLANDS = (0.0, 0.8, 0.0, 0.0, 0.0, 0.2)
STROMA_WITHOUT_LYMPHOCYTES = (0.4, 0.0, 0.2, 0.2, 0.2, 0.0)


def analysis_cells(tmp_path, xy, types, params=None, **kwargs):
    path = tmp_path / "slide.h5ad"
    build_anndata(xy, types, **kwargs).write_h5ad(path)
    params = params or NicheParams()
    notes = Notes("test")
    return select_cells(read_slide_cells(path), params, notes), params, notes


@pytest.fixture(scope="module")
def random_cells(tmp_path_factory):
    xy, types = random_layout(3000, 1100.0, [1, 1, 1, 1, 1, 1], seed=5)
    cells, params, notes = analysis_cells(tmp_path_factory.mktemp("random"), xy, types)
    return cells, build_graph(cells.xy_um, params, notes)


@pytest.fixture(scope="module")
def island_cells(tmp_path_factory):
    xy, types, _ = island_layout(
        4000,
        tumour_area_fraction=0.3,
        island_radius_um=(150.0, 250.0),
        island_mixture=LYMPHOCYTES_IN_ISLANDS,
        stroma_mixture=STROMA_WITHOUT_LYMPHOCYTES,
        seed=2,
    )
    cells, params, notes = analysis_cells(tmp_path_factory.mktemp("islands"), xy, types)
    return cells, build_graph(cells.xy_um, params, notes)


def pair(table: pd.DataFrame, a: str, b: str, column: str) -> float:
    row = table[(table["cell_type_a"] == a) & (table["cell_type_b"] == b)]
    return float(row[column].iloc[0])


def test_random_layout_zscores_near_zero(random_cells):
    cells, graph = random_cells
    table, zscore, _ = neighbourhood_enrichment(cells, graph, n_perms=200, seed=0, notes=Notes("test"))
    assert np.all(np.abs(zscore) < 4.0), table.loc[table["zscore"].abs() >= 4.0]
    assert float(np.mean(np.abs(zscore))) < 1.5


def test_lymphocytes_in_islands_enriched_with_tumour(island_cells):
    cells, graph = island_cells
    table, _, _ = neighbourhood_enrichment(cells, graph, n_perms=200, seed=0, notes=Notes("test"))
    assert pair(table, "Tumor_cell_LUAD", "Lymphocyte", "zscore") > 10.0
    assert pair(table, "Alveolar_cell", "Lymphocyte", "zscore") < -10.0


def test_enrichment_same_seed_same_zscores(random_cells):
    cells, graph = random_cells
    _, first, _ = neighbourhood_enrichment(cells, graph, n_perms=50, seed=7, notes=Notes("test"))
    _, second, _ = neighbourhood_enrichment(cells, graph, n_perms=50, seed=7, notes=Notes("test"))
    np.testing.assert_array_equal(first, second)


def test_enrichment_single_type_gives_note(tmp_path):
    xy, _ = random_layout(200, 400.0, [1, 1, 1, 1, 1, 1], seed=1)
    cells, params, notes = analysis_cells(tmp_path, xy, ["Fibroblast"] * 200)
    graph = build_graph(cells.xy_um, params, notes)
    table, zscore, _ = neighbourhood_enrichment(cells, graph, n_perms=20, seed=0, notes=notes)
    assert table.empty
    assert zscore is None
    assert "at least two cell types" in notes.joined("enrichment")


def test_interaction_counts_symmetric(random_cells):
    cells, graph = random_cells
    table, matrix = interaction_counts(cells, graph)
    np.testing.assert_array_equal(matrix, matrix.T)
    assert int(table["edges"].sum()) == graph.connectivities.nnz


def test_co_occurrence_matches_squidpy(tmp_path):
    xy, types = random_layout(400, 500.0, [1, 1, 1, 0, 0, 1], seed=3)
    cells, _, _ = analysis_cells(tmp_path, xy, types)
    _, ratios = co_occurrence(cells, (20.0, 50.0, 100.0), Notes("test"))

    import anndata as ad

    sq = import_squidpy()
    adata = ad.AnnData(obs=pd.DataFrame({"ct": cells.labels}, index=[str(i) for i in range(cells.n_cells)]))
    adata.obsm["spatial"] = cells.xy_um
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected, _ = sq.gr.co_occurrence(adata, "ct", interval=np.array([0.0, 20.0, 50.0, 100.0]), copy=True)
    # squidpy indexes (neighbour type, conditioning type, distance); the ratio is symmetric.
    np.testing.assert_allclose(ratios, np.transpose(expected, (1, 0, 2)), rtol=1e-9)


def test_co_occurrence_lymphocytes_near_tumour(island_cells):
    cells, _ = island_cells
    table, _ = co_occurrence(cells, (20.0, 50.0), Notes("test"))
    rows = table[(table["cell_type_a"] == "Tumor_cell_LUAD") & (table["cell_type_b"] == "Lymphocyte")]
    assert np.all(rows["ratio"].to_numpy() > 2.0)


def test_co_occurrence_undefined_ratio_has_note(tmp_path):
    xy = np.array(
        [[0.0, 0.0], [5.0, 0.0], [500.0, 0.0], [505.0, 0.0], [1000.0, 0.0]] + [[0.0, 10.0 * k + 20.0] for k in range(6)]
    )
    types = ["Fibroblast", "Fibroblast", "Fibroblast", "Fibroblast", "Lymphocyte"] + ["Fibroblast"] * 6
    cells, _, notes = analysis_cells(tmp_path, xy, types)
    table, _ = co_occurrence(cells, (8.0,), notes)
    lymph = table[table["cell_type_a"] == "Lymphocyte"]
    assert lymph["ratio"].isna().all()
    assert lymph["note"].str.contains("no Lymphocyte cell has a neighbour").all()
