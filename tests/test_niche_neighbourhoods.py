"""Cellular niches: window compositions and seeded k-means on layouts with known expected values."""

from __future__ import annotations

import numpy as np
import pytest

from shest.niche.cells import select_cells
from shest.niche.h5ad import read_slide_cells
from shest.niche.neighbourhoods import find_niches, window_compositions
from shest.niche.notes import Notes
from shest.niche.params import NicheParams
from shest.niche.synthetic import build_anndata


def analysis_cells(tmp_path, xy, types):
    path = tmp_path / "slide.h5ad"
    build_anndata(xy, types).write_h5ad(path)
    return select_cells(read_slide_cells(path), NicheParams(), Notes("test"))


@pytest.fixture(scope="module")
def two_populations(tmp_path_factory):
    """Left square: tumour cells and lymphocytes; right square, 1 mm away: alveolar cells and fibroblasts."""
    rng = np.random.default_rng(4)
    left = rng.uniform(0.0, 600.0, size=(1500, 2))
    right = rng.uniform(0.0, 600.0, size=(1500, 2)) + [1600.0, 0.0]
    types = np.concatenate(
        [
            rng.choice(["Tumor_cell_LUAD", "Lymphocyte"], size=1500, p=[0.7, 0.3]),
            rng.choice(["Alveolar_cell", "Fibroblast"], size=1500, p=[0.6, 0.4]),
        ]
    )
    side = np.repeat([0, 1], 1500)
    cells = analysis_cells(tmp_path_factory.mktemp("two"), np.vstack([left, right]), types)
    return cells, side


def test_two_populations_give_two_niches(two_populations):
    cells, side = two_populations
    niches = find_niches(cells, n_niches=2, n_neighbors=10, radius_um=None, seed=0, notes=Notes("test"))
    codes = np.asarray(niches.labels.codes)
    left_label = np.bincount(codes[side == 0]).argmax()
    agreement = np.mean((codes == left_label) == (side == 0))
    assert agreement == 1.0


def test_niche_composition_names_dominant_types(two_populations):
    cells, _ = two_populations
    niches = find_niches(cells, n_niches=2, n_neighbors=10, radius_um=None, seed=0, notes=Notes("test"))
    assert set(niches.composition["dominant_cell_type"]) == {"Tumor_cell_LUAD", "Alveolar_cell"}


def test_niches_numbered_by_size(two_populations):
    cells, _ = two_populations
    niches = find_niches(cells, n_niches=4, n_neighbors=10, radius_um=None, seed=0, notes=Notes("test"))
    sizes = niches.composition["n_cells"].to_numpy()
    assert np.all(np.diff(sizes) <= 0)


def test_niches_same_seed_same_labels(two_populations):
    cells, _ = two_populations
    first = find_niches(cells, n_niches=5, n_neighbors=10, radius_um=None, seed=3, notes=Notes("test"))
    second = find_niches(cells, n_niches=5, n_neighbors=10, radius_um=None, seed=3, notes=Notes("test"))
    np.testing.assert_array_equal(np.asarray(first.labels.codes), np.asarray(second.labels.codes))


def test_radius_windows_sum_to_one(two_populations):
    cells, _ = two_populations
    compositions, window = window_compositions(cells, n_neighbors=10, radius_um=40.0)
    np.testing.assert_allclose(compositions.sum(axis=1), 1.0)
    assert window == "cells within 40 µm"


def test_knn_window_counts_the_cell_itself(tmp_path):
    xy = np.array([[0.0, 0.0], [1000.0, 0.0], [1005.0, 0.0]])
    cells = analysis_cells(tmp_path, xy, ["Lymphocyte", "Fibroblast", "Fibroblast"])
    compositions, _ = window_compositions(cells, n_neighbors=1, radius_um=None)
    np.testing.assert_array_equal(compositions[:, list(cells.categories).index("Lymphocyte")], [1.0, 0.0, 0.0])


def test_single_type_gives_one_niche_and_note(tmp_path):
    rng = np.random.default_rng(0)
    cells = analysis_cells(tmp_path, rng.uniform(0, 300, size=(100, 2)), ["Fibroblast"] * 100)
    notes = Notes("test")
    niches = find_niches(cells, n_niches=6, n_neighbors=10, radius_um=None, seed=0, notes=notes)
    assert list(niches.labels.categories) == ["N1"]
    assert "1 niches are formed instead of 6" in notes.joined("niches")
