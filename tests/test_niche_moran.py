"""Moran's I of reconstructed genes on a normalised copy of X."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from shest.niche.cells import select_cells
from shest.niche.graph import build_graph
from shest.niche.h5ad import read_slide_cells
from shest.niche.moran import morans_i
from shest.niche.notes import Notes
from shest.niche.params import NicheParams
from shest.niche.synthetic import LUNG_CLASSES, build_anndata, island_layout


def run_moran(path):
    slide = read_slide_cells(path)
    notes = Notes("test")
    cells = select_cells(slide, NicheParams(), notes)
    graph = build_graph(cells.xy_um, NicheParams(), notes)
    return morans_i(path, cells.rows, slide.var_names, graph, notes), notes


@pytest.fixture(scope="module")
def island_h5ad(tmp_path_factory):
    xy, types, _ = island_layout(3000, tumour_area_fraction=0.3, island_radius_um=(150.0, 250.0), seed=1)
    adata = build_anndata(xy, types, n_genes=12, unassigned_fraction=0.05, seed=1)
    path = tmp_path_factory.mktemp("moran") / "slide.h5ad"
    adata.write_h5ad(path)
    return path, adata


def test_tumour_marker_is_top_gene(island_h5ad):
    path, _ = island_h5ad
    table, _ = run_moran(path)
    # build_anndata makes gene i a marker of class i; class 1 is the tumour cell.
    assert table["gene"].iloc[0] == f"GENE{LUNG_CLASSES.index('Tumor_cell_LUAD'):04d}"


def test_tumour_marker_significant(island_h5ad):
    path, _ = island_h5ad
    table, _ = run_moran(path)
    assert table["pval_norm_fdr_bh"].iloc[0] < 1e-6


def test_constant_gene_not_tested(island_h5ad):
    path, _ = island_h5ad
    table, notes = run_moran(path)
    assert "GENE0011" not in set(table["gene"])
    assert "1 genes have the same normalised value" in notes.joined("moran")


def test_random_gene_near_zero(tmp_path):
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 1000, size=(2000, 2))
    types = rng.choice(LUNG_CLASSES, size=2000)
    path = tmp_path / "random.h5ad"
    build_anndata(xy, types, n_genes=4, seed=2).write_h5ad(path)
    table, _ = run_moran(path)
    assert np.all(np.abs(table["morans_i"].to_numpy()) < 0.1)


def test_sparse_x_gives_same_result(island_h5ad, tmp_path):
    path, adata = island_h5ad
    sparse_copy = adata.copy()
    sparse_copy.X = sparse.csr_matrix(adata.X)
    sparse_path = tmp_path / "sparse.h5ad"
    sparse_copy.write_h5ad(sparse_path)
    dense_table, _ = run_moran(path)
    sparse_table, _ = run_moran(sparse_path)
    np.testing.assert_allclose(sparse_table["morans_i"].to_numpy(), dense_table["morans_i"].to_numpy())


def test_no_genes_gives_note(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "nogenes.h5ad"
    build_anndata(rng.uniform(0, 500, size=(100, 2)), ["Fibroblast", "Lymphocyte"] * 50, n_genes=0).write_h5ad(path)
    table, notes = run_moran(path)
    assert table.empty
    assert "no genes" in notes.joined("moran")


def test_matches_squidpy_spatial_autocorr(island_h5ad):
    import warnings

    import anndata as ad
    import pandas as pd

    from shest.niche.graph import import_squidpy

    path, adata = island_h5ad
    table, _ = run_moran(path)
    slide = read_slide_cells(path)
    cells = select_cells(slide, NicheParams(), Notes("test"))
    graph = build_graph(cells.xy_um, NicheParams(), Notes("test"))
    counts = adata.X[cells.rows].astype(float)
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.log1p(counts / totals * np.median(totals))
    reference = ad.AnnData(X=normalised, var=pd.DataFrame(index=adata.var_names))
    reference.obsp["spatial_connectivities"] = graph.connectivities
    sq = import_squidpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = sq.gr.spatial_autocorr(reference, mode="moran", n_perms=None, copy=True, show_progress_bar=False)
    expected = expected.loc[table["gene"]]
    np.testing.assert_allclose(table["morans_i"].to_numpy(), expected["I"].to_numpy(), rtol=1e-6, atol=1e-9)
    # squidpy computes 1 - cdf(z), which rounds p-values below about 1e-16 to 0; the survival function does not.
    np.testing.assert_allclose(table["pval_norm"].to_numpy(), expected["pval_norm"].to_numpy(), rtol=1e-4, atol=1e-15)


def test_expression_reader_closes_on_error(tmp_path):
    import h5py

    from shest.niche.h5ad import ExpressionReader

    path = tmp_path / "broken.h5ad"
    with h5py.File(path, "w") as f:
        x = f.create_group("X")  # a CSR matrix whose data, indices and indptr are missing
        x.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (3, 2)})
    open_before = len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE))
    with pytest.raises(Exception) as raised:
        ExpressionReader(path, np.arange(3))
    # The traceback in `raised` keeps the reader alive, so only an explicit close frees the file.
    open_after = len(h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE))
    del raised
    assert open_after == open_before
