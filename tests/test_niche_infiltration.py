"""Tumour regions, margin, stroma and lymphocyte infiltration on layouts with known expected values."""

from __future__ import annotations

import numpy as np
import pytest

from shest.niche.cells import select_cells
from shest.niche.h5ad import read_slide_cells
from shest.niche.infiltration import measure_infiltration
from shest.niche.notes import Notes
from shest.niche.params import NicheParams
from shest.niche.regions import find_compartments
from shest.niche.synthetic import build_anndata

SIDE_UM = 2000.0
ISLAND_CENTRE = np.array([1000.0, 1000.0])
ISLAND_RADIUS_UM = 300.0


def analysis_cells(tmp_path, xy, types, params=None):
    path = tmp_path / "slide.h5ad"
    build_anndata(xy, types).write_h5ad(path)
    notes = Notes("test")
    params = params or NicheParams()
    return select_cells(read_slide_cells(path), params, notes), params, notes


def island_slide(rng, island_types, island_shares, stroma_types, stroma_shares, n_cells=10000):
    """Cells at 2500 per mm² over a 2 mm square with one round island of 300 µm radius in the middle."""
    xy = rng.uniform(0.0, SIDE_UM, size=(n_cells, 2))
    inside = np.linalg.norm(xy - ISLAND_CENTRE, axis=1) <= ISLAND_RADIUS_UM
    types = np.empty(n_cells, dtype=object)
    types[inside] = rng.choice(island_types, size=int(inside.sum()), p=island_shares)
    types[~inside] = rng.choice(stroma_types, size=int((~inside).sum()), p=stroma_shares)
    return xy, types.astype(str), inside


@pytest.fixture(scope="module")
def infiltrated(tmp_path_factory):
    """Lymphocytes only inside the tumour island (20 % of its cells)."""
    rng = np.random.default_rng(11)
    xy, types, inside = island_slide(
        rng, ["Tumor_cell_LUAD", "Lymphocyte"], [0.8, 0.2], ["Alveolar_cell", "Fibroblast"], [0.5, 0.5]
    )
    cells, params, notes = analysis_cells(tmp_path_factory.mktemp("infiltrated"), xy, types)
    compartments = find_compartments(cells, params, notes)
    infiltration = measure_infiltration(cells, compartments, params.contact_um, notes)
    return cells, compartments, infiltration, inside, notes


def test_tumour_area_matches_island(infiltrated):
    _, compartments, _, _, _ = infiltrated
    expected_mm2 = np.pi * ISLAND_RADIUS_UM**2 / 1e6
    assert compartments.area_mm2("tumour") == pytest.approx(expected_mm2, rel=0.1)


def test_one_tumour_region(infiltrated):
    _, compartments, _, _, _ = infiltrated
    assert compartments.n_tumour_regions == 1


def test_margin_is_band_around_island(infiltrated):
    _, compartments, _, _, _ = infiltrated
    outer = ISLAND_RADIUS_UM + NicheParams().margin_um
    expected_mm2 = np.pi * (outer**2 - ISLAND_RADIUS_UM**2) / 1e6
    assert compartments.area_mm2("margin") == pytest.approx(expected_mm2, rel=0.15)


def test_compartments_partition_tissue(infiltrated):
    _, compartments, _, _, _ = infiltrated
    total = compartments.area_mm2("tumour") + compartments.area_mm2("margin") + compartments.area_mm2("stroma")
    assert total == pytest.approx(compartments.area_mm2("tissue"))


def test_island_cells_assigned_to_tumour(infiltrated):
    cells, compartments, _, inside, _ = infiltrated
    deep = np.linalg.norm(cells.xy_um - ISLAND_CENTRE, axis=1) <= ISLAND_RADIUS_UM - 30.0
    assert np.all(np.asarray(compartments.cell_compartment)[deep] == "tumour")


def test_inside_tumour_density_high(infiltrated):
    _, _, infiltration, _, _ = infiltrated
    # 2500 cells per mm² of which 20 % are lymphocytes inside the island.
    assert infiltration.value("lymphocyte_density_tumour") == pytest.approx(500.0, rel=0.2)


def test_stroma_density_zero(infiltrated):
    _, _, infiltration, _, _ = infiltrated
    assert infiltration.value("lymphocyte_density_stroma") == 0.0


def test_lymphocytes_in_contact_with_tumour(infiltrated):
    _, _, infiltration, _, _ = infiltrated
    # Tumour cells are a Poisson process of 2000 per mm² in the island, so the chance
    # that one lies within 20 µm of a lymphocyte is 1 - exp(-2000e-6 * pi * 20²).
    expected = 1.0 - np.exp(-2000e-6 * np.pi * 20.0**2)
    assert infiltration.value("lymphocytes_within_20um_of_tumour") == pytest.approx(expected, abs=0.03)


def test_distance_quantiles_ordered(infiltrated):
    _, _, infiltration, _, _ = infiltrated
    quantiles = [infiltration.value(f"tumour_lymphocyte_distance_p{q}") for q in ("10", "25", "50", "75", "90")]
    assert quantiles == sorted(quantiles)


def test_distance_histogram_counts_lymphocytes(infiltrated):
    cells, _, infiltration, _, _ = infiltrated
    assert int(infiltration.distance_histogram["lymphocytes"].sum()) == int(cells.mask("Lymphocyte").sum())


def test_no_tumour_cells_notes_undefined_densities(tmp_path):
    rng = np.random.default_rng(2)
    xy = rng.uniform(0.0, 1000.0, size=(2500, 2))
    types = rng.choice(["Alveolar_cell", "Lymphocyte"], size=2500, p=[0.8, 0.2])
    cells, params, notes = analysis_cells(tmp_path, xy, types)
    compartments = find_compartments(cells, params, notes)
    infiltration = measure_infiltration(cells, compartments, params.contact_um, notes)
    metrics = infiltration.metrics.set_index("metric")
    assert np.isnan(metrics.loc["lymphocyte_density_tumour", "value"])
    assert "no tumour area" in metrics.loc["lymphocyte_density_tumour", "note"]
    assert metrics.loc["lymphocyte_density_stroma", "value"] > 0
    assert np.isnan(metrics.loc["tumour_lymphocyte_distance_p50", "value"])
    assert "No Tumor_cell_LUAD cells" in notes.joined("infiltration")


def test_no_lymphocytes_gives_zero_density(tmp_path):
    rng = np.random.default_rng(3)
    xy, types, _ = island_slide(
        rng, ["Tumor_cell_LUAD"], [1.0], ["Alveolar_cell", "Fibroblast"], [0.5, 0.5], n_cells=6000
    )
    cells, params, notes = analysis_cells(tmp_path, xy, types)
    compartments = find_compartments(cells, params, notes)
    infiltration = measure_infiltration(cells, compartments, params.contact_um, notes)
    metrics = infiltration.metrics.set_index("metric")
    assert metrics.loc["lymphocyte_density_tumour", "value"] == 0.0
    assert np.isnan(metrics.loc["lymphocytes_within_20um_of_tumour", "value"])
    assert infiltration.distance_histogram.empty
    assert "No Lymphocyte cells" in notes.joined("infiltration")


def test_scattered_tumour_cells_form_no_region(tmp_path):
    rng = np.random.default_rng(5)
    xy = rng.uniform(0.0, 1000.0, size=(2500, 2))
    types = rng.choice(["Fibroblast", "Tumor_cell_LUAD", "Lymphocyte"], size=2500, p=[0.9, 0.05, 0.05])
    cells, params, notes = analysis_cells(tmp_path, xy, types)
    compartments = find_compartments(cells, params, notes)
    infiltration = measure_infiltration(cells, compartments, params.contact_um, notes)
    assert compartments.n_tumour_regions == 0
    assert "no area meets the tumour-region rule" in notes.joined("infiltration")
    assert np.isfinite(infiltration.value("tumour_lymphocyte_distance_p50"))


def test_other_tumour_category_by_parameter(tmp_path):
    rng = np.random.default_rng(6)
    xy, types, _ = island_slide(rng, ["Macrophage"], [1.0], ["Fibroblast"], [1.0], n_cells=6000)
    params = NicheParams(tumour_type="Macrophage", lymphocyte_type="Fibroblast")
    cells, params, notes = analysis_cells(tmp_path, xy, types, params)
    compartments = find_compartments(cells, params, notes)
    expected_mm2 = np.pi * ISLAND_RADIUS_UM**2 / 1e6
    assert compartments.area_mm2("tumour") == pytest.approx(expected_mm2, rel=0.1)
