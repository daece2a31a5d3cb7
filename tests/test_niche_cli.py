"""`shest niche` and `shest niche-cohort` end to end on synthetic AnnData files."""

from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

from shest.cli.main import main
from shest.niche.h5ad import write_niche_h5ad
from shest.niche.outputs import REPLACED_KEYS, output_paths
from shest.niche.report import TABLE_NAMES
from shest.niche.synthetic import build_anndata, island_layout

FAST = ["--n-perms", "50"]


def write_slide(path, xy, types, sample, **kwargs):
    build_anndata(xy, types, sample=sample, n_genes=8, **kwargs).write_h5ad(path)
    return path


def island_slide(path, sample, seed=0, n_cells=3000):
    xy, types, _ = island_layout(n_cells, tumour_area_fraction=0.3, island_radius_um=(150.0, 250.0), seed=seed)
    return write_slide(path, xy, types, sample, unassigned_fraction=0.05, seed=seed)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_mqc(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    header = yaml.safe_load("\n".join(line[2:] for line in lines if line.startswith("# ")))
    body = [line.split("\t") for line in lines if not line.startswith("#")]
    return header, pd.DataFrame(body[1:], columns=body[0])


@pytest.fixture(scope="module")
def niche_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    h5ad = island_slide(root / "S1.h5ad", "S1")
    before = sha256(h5ad)
    outdir = root / "out"
    code = main(["niche", str(h5ad), "--outdir", str(outdir), *FAST])
    return code, h5ad, before, outdir


def test_niche_exits_zero(niche_run):
    code, _, _, _ = niche_run
    assert code == 0


def test_niche_writes_every_output(niche_run):
    _, _, _, outdir = niche_run
    missing = [str(p) for p in output_paths(outdir, "S1").values() if not p.is_file()]
    assert missing == []


def test_niche_leaves_no_temporary_files(niche_run):
    _, _, _, outdir = niche_run
    assert [p.name for p in outdir.iterdir() if p.name.startswith(".")] == []


def test_niche_input_unchanged(niche_run):
    _, h5ad, before, _ = niche_run
    assert sha256(h5ad) == before


def test_niche_h5ad_contents(niche_run):
    _, h5ad, _, outdir = niche_run
    source = ad.read_h5ad(h5ad)
    result = ad.read_h5ad(outdir / "S1.niche.h5ad")
    assert result.obsp["spatial_connectivities"].shape == (result.n_obs, result.n_obs)
    assert result.obs["niche"].notna().sum() == int((~source.obs["unassigned"]).sum())
    assert result.obs.loc[source.obs["unassigned"].to_numpy(), "niche"].isna().all()
    assert "shest_niche" in result.uns
    assert result.uns["niche_cell_type_nhood_enrichment"]["zscore"].shape == (6, 6)


def test_niche_h5ad_keeps_counts(niche_run):
    _, h5ad, _, outdir = niche_run
    source = ad.read_h5ad(h5ad)
    result = ad.read_h5ad(outdir / "S1.niche.h5ad")
    assert result.X.dtype == source.X.dtype
    np.testing.assert_array_equal(result.X, source.X)


def test_niche_unassigned_cells_have_no_edges(niche_run):
    _, _, _, outdir = niche_run
    result = ad.read_h5ad(outdir / "S1.niche.h5ad")
    degree = np.diff(result.obsp["spatial_connectivities"].tocsr().indptr)
    assert np.all(degree[result.obs["unassigned"].to_numpy()] == 0)


def test_niche_mqc_sections(niche_run):
    _, _, _, outdir = niche_run
    niche_header, niche_rows = read_mqc(outdir / "S1_niche_mqc.tsv")
    infiltration_header, _ = read_mqc(outdir / "S1_infiltration_mqc.tsv")
    assert niche_header["id"] == "shest_niche"
    assert infiltration_header["id"] == "shest_infiltration"
    assert list(niche_rows["Sample"]) == ["S1"]


def test_niche_outputs_say_demo(niche_run):
    _, _, _, outdir = niche_run
    header, rows = read_mqc(outdir / "S1_niche_mqc.tsv")
    assert header["description"].startswith("DEMO")
    assert set(pd.read_csv(outdir / "S1.niche_summary.csv")["demo"]) == {True}


def test_niche_rerun_writes_identical_files(niche_run, tmp_path):
    # Timings and other run-dependent values belong in the log, never in the outputs.
    _, h5ad, _, outdir = niche_run
    assert main(["niche", str(h5ad), "--outdir", str(tmp_path), *FAST]) == 0
    first = output_paths(outdir, "S1")
    second = output_paths(tmp_path, "S1")
    differing = [name for name in first if first[name].read_bytes() != second[name].read_bytes()]
    assert differing == []


def test_niche_keeps_matplotlib_backend(tmp_path):
    # A notebook user calling the niche analysis keeps the backend they chose.
    import matplotlib

    h5ad = island_slide(tmp_path / "S3.h5ad", "S3", n_cells=400)
    previous = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        chosen = matplotlib.get_backend()
        main(["niche", str(h5ad), "--outdir", str(tmp_path / "out"), *FAST])
        after = matplotlib.get_backend()
    finally:
        matplotlib.use(previous)
    assert after == chosen


def test_rewrite_removes_stale_results(niche_run, tmp_path):
    _, _, _, outdir = niche_run
    source = outdir / "S1.niche.h5ad"
    index = ad.read_h5ad(source).obs.index
    write_niche_h5ad(source, tmp_path / "again.h5ad", pd.DataFrame(index=index), {}, {}, REPLACED_KEYS)
    result = ad.read_h5ad(tmp_path / "again.h5ad")
    assert "spatial_connectivities" not in result.obsp
    assert "niche" not in result.obs.columns
    assert "shest_niche" not in result.uns


def test_keep_unassigned_category(tmp_path):
    h5ad = island_slide(tmp_path / "S2.h5ad", "S2", n_cells=1500)
    assert main(["niche", str(h5ad), "--outdir", str(tmp_path / "out"), "--keep-unassigned", *FAST]) == 0
    celltypes = pd.read_csv(tmp_path / "out" / "S2.niche_celltypes.csv")
    assert "Unassigned" in set(celltypes["cell_type"])


def test_radius_graph_and_radius_niches(tmp_path):
    h5ad = island_slide(tmp_path / "S3.h5ad", "S3", n_cells=1500)
    argv = [
        "niche",
        str(h5ad),
        "--outdir",
        str(tmp_path / "out"),
        "--graph",
        "radius",
        "--radius-um",
        "25",
        "--niche-radius-um",
        "40",
        "--n-niches",
        "3",
        *FAST,
    ]
    assert main(argv) == 0
    compositions = pd.read_csv(tmp_path / "out" / "S3.niche_compositions.csv")
    assert set(compositions["window"]) == {"cells within 40 µm"}


def undefined_values_without_note(table: pd.DataFrame) -> int:
    value_columns = [c for c in ("zscore", "ratio", "value") if c in table.columns]
    if not value_columns or "note" not in table.columns:
        return 0
    missing = table[value_columns].isna().any(axis=1)
    return int((missing & table["note"].fillna("").eq("")).sum())


EDGE_CASES = {
    "few_cells": (
        np.array([[0, 0], [20, 0], [0, 20], [30, 30], [50, 10]], float),
        ["Tumor_cell_LUAD", "Lymphocyte", "Tumor_cell_LUAD", "Fibroblast", "Lymphocyte"],
    ),
    "one_type": (np.random.default_rng(1).uniform(0, 600, (800, 2)), ["Fibroblast"] * 800),
    "no_tumour": (
        np.random.default_rng(2).uniform(0, 600, (800, 2)),
        ["Fibroblast", "Lymphocyte", "Macrophage", "Alveolar_cell"] * 200,
    ),
    "no_lymphocytes": (
        np.random.default_rng(3).uniform(0, 600, (800, 2)),
        ["Tumor_cell_LUAD"] * 600 + ["Fibroblast"] * 200,
    ),
    "collinear": (np.column_stack([np.arange(40) * 8.0, np.zeros(40)]), ["Tumor_cell_LUAD", "Lymphocyte"] * 20),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_case_runs_with_notes(case, tmp_path):
    xy, types = EDGE_CASES[case]
    h5ad = write_slide(tmp_path / f"{case}.h5ad", xy, types, case)
    outdir = tmp_path / "out"
    assert main(["niche", str(h5ad), "--outdir", str(outdir), *FAST]) == 0
    notes = pd.read_csv(outdir / f"{case}.niche_notes.csv")
    assert len(notes) > 0
    for name in ("enrichment", "cooccurrence", "infiltration"):
        table = pd.read_csv(outdir / f"{case}.niche_{name}.csv")
        assert undefined_values_without_note(table) == 0, name


def test_edge_case_few_cells_skips_statistics(tmp_path):
    xy, types = EDGE_CASES["few_cells"]
    h5ad = write_slide(tmp_path / "few.h5ad", xy, types, "few")
    assert main(["niche", str(h5ad), "--outdir", str(tmp_path), *FAST]) == 0
    notes = pd.read_csv(tmp_path / "few.niche_notes.csv")
    assert "need at least 10" in " ".join(notes.loc[notes["analysis"] == "enrichment", "note"])


def test_all_cells_unassigned(tmp_path):
    rng = np.random.default_rng(4)
    h5ad = write_slide(
        tmp_path / "none.h5ad", rng.uniform(0, 300, (50, 2)), ["Fibroblast"] * 50, "none", unassigned_fraction=1.0
    )
    assert main(["niche", str(h5ad), "--outdir", str(tmp_path), *FAST]) == 0
    notes = pd.read_csv(tmp_path / "none.niche_notes.csv")
    assert notes["note"].str.contains("--keep-unassigned").any()
    assert pd.read_csv(tmp_path / "none.niche_infiltration.csv").empty


def test_unknown_tumour_type_exits_one(niche_run, tmp_path, capsys):
    _, h5ad, _, _ = niche_run
    assert main(["niche", str(h5ad), "--outdir", str(tmp_path), "--tumour-type", "Tumour"]) == 1
    assert "--tumour-type" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_input_exits_one(tmp_path, capsys):
    assert main(["niche", str(tmp_path / "absent.h5ad"), "--outdir", str(tmp_path)]) == 1
    assert "not found" in capsys.readouterr().err


def test_bad_distance_list_is_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["niche", str(tmp_path / "x.h5ad"), "--co-occurrence-um", "20,abc"])
    assert exit_info.value.code == 2


def test_slide_thumbnail_background(cmu_slide, tmp_path):
    rng = np.random.default_rng(5)
    xy = rng.uniform(50, 1000, (400, 2))
    h5ad = write_slide(
        tmp_path / "cmu.h5ad", xy, rng.choice(["Tumor_cell_LUAD", "Lymphocyte", "Fibroblast"], 400), "cmu", mpp=0.499
    )
    assert main(["niche", str(h5ad), "--outdir", str(tmp_path / "out"), "--slide", str(cmu_slide), *FAST]) == 0
    assert (tmp_path / "out" / "cmu.niche_map.png").stat().st_size > 0


@pytest.fixture(scope="module")
def cohort_inputs(niche_run, tmp_path_factory):
    _, _, _, first = niche_run
    root = tmp_path_factory.mktemp("cohort")
    h5ad = island_slide(root / "S9.h5ad", "S9", seed=9, n_cells=1500)
    second = root / "S9"
    assert main(["niche", str(h5ad), "--outdir", str(second), *FAST]) == 0
    return first, second


def test_cohort_one_table_per_metric(cohort_inputs, tmp_path):
    first, second = cohort_inputs
    assert main(["niche-cohort", str(first), str(second), "--outdir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"cohort_{name}.csv" for name in TABLE_NAMES)


def test_cohort_sample_column(cohort_inputs, tmp_path):
    first, second = cohort_inputs
    assert main(["niche-cohort", str(second), str(first), "--outdir", str(tmp_path)]) == 0
    summary = pd.read_csv(tmp_path / "cohort_summary.csv")
    assert list(summary["sample"]) == ["S1", "S9"]
    enrichment = pd.read_csv(tmp_path / "cohort_enrichment.csv")
    assert set(enrichment["sample"]) == {"S1", "S9"}


def test_cohort_accepts_single_files(cohort_inputs, tmp_path):
    first, second = cohort_inputs
    files = [str(first / "S1.niche_infiltration.csv"), str(second / "S9.niche_infiltration.csv")]
    assert main(["niche-cohort", *files, "--outdir", str(tmp_path)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["cohort_infiltration.csv"]


def test_cohort_duplicate_sample_exits_one(cohort_inputs, tmp_path, capsys):
    first, _ = cohort_inputs
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "S1.niche_summary.csv").write_bytes((first / "S1.niche_summary.csv").read_bytes())
    assert main(["niche-cohort", str(first), str(copy), "--outdir", str(tmp_path / "out")]) == 1
    assert "appears in two summary tables" in capsys.readouterr().err


def test_cohort_without_tables_exits_one(tmp_path, capsys):
    assert main(["niche-cohort", str(tmp_path), "--outdir", str(tmp_path)]) == 1
    assert "No S.niche_<metric>.csv tables" in capsys.readouterr().err


def test_plain_string_cell_types_take_model_order(tmp_path):
    from shest.niche.h5ad import _as_categorical
    from shest.niche.synthetic import LUNG_CLASSES

    column = pd.Series(["Lymphocyte", "Alveolar_cell", "Lymphocyte"])
    shest = {"model": {"classes": np.array(LUNG_CLASSES, dtype=object)}}
    categories = _as_categorical(column, shest, tmp_path / "S.h5ad").categories
    assert list(categories) == list(LUNG_CLASSES)


def test_keep_unassigned_with_existing_category(tmp_path):
    rng = np.random.default_rng(5)
    types = rng.choice(["Tumor_cell_LUAD", "Lymphocyte", "Fibroblast"], 600)
    adata = build_anndata(rng.uniform(0, 600, (600, 2)), types, sample="S3", n_genes=8, unassigned_fraction=0.1)
    adata.obs["cell_type"] = adata.obs["cell_type"].cat.add_categories(["Unassigned"])
    adata.write_h5ad(tmp_path / "S3.h5ad")
    assert main(["niche", str(tmp_path / "S3.h5ad"), "--outdir", str(tmp_path / "out"), "--keep-unassigned", *FAST]) == 0
    celltypes = pd.read_csv(tmp_path / "out" / "S3.niche_celltypes.csv")
    assert "Unassigned" in set(celltypes["cell_type"])


@pytest.mark.parametrize(
    ("values", "code"),
    [(["True", "False"], 0), (["yes", "no"], 1)],
    ids=["true-false text", "other text"],
)
def test_unassigned_flags_stored_as_text(tmp_path, values, code, capsys):
    rng = np.random.default_rng(6)
    types = rng.choice(["Tumor_cell_LUAD", "Lymphocyte"], 400)
    adata = build_anndata(rng.uniform(0, 400, (400, 2)), types, sample="S4", n_genes=8)
    adata.obs["unassigned"] = pd.Categorical([values[i % 2] for i in range(400)])
    adata.write_h5ad(tmp_path / "S4.h5ad")
    assert main(["niche", str(tmp_path / "S4.h5ad"), "--outdir", str(tmp_path / "out"), *FAST]) == code
    if code:
        assert "obs['unassigned'] must hold True/False flags" in capsys.readouterr().err


def test_moran_on_complete_graph_is_noted(tmp_path):
    rng = np.random.default_rng(7)
    h5ad = write_slide(tmp_path / "S5.h5ad", rng.uniform(0, 50, (40, 2)), ["Tumor_cell_LUAD", "Lymphocyte"] * 20, "S5")
    code = main(["niche", str(h5ad), "--outdir", str(tmp_path), "--graph", "radius", "--radius-um", "500", *FAST])
    assert code == 0
    notes = pd.read_csv(tmp_path / "S5.niche_notes.csv")
    assert "Moran's I is undefined here" in " ".join(notes.loc[notes["analysis"] == "moran", "note"])


def test_too_few_permutations_exit_one(niche_run, capsys):
    _, h5ad, _, _ = niche_run
    assert main(["niche", str(h5ad), "--outdir", "unused", "--n-perms", "5"]) == 1
    assert "--n-perms must be at least 20" in capsys.readouterr().err


def test_cohort_keeps_sample_named_na(tmp_path):
    h5ad = island_slide(tmp_path / "NA.h5ad", "NA", n_cells=800)
    assert main(["niche", str(h5ad), "--outdir", str(tmp_path / "NA"), *FAST]) == 0
    assert main(["niche-cohort", str(tmp_path / "NA"), "--outdir", str(tmp_path / "cohort")]) == 0
    summary = pd.read_csv(tmp_path / "cohort" / "cohort_summary.csv", keep_default_na=False)
    assert list(summary["sample"]) == ["NA"]


def test_cohort_warns_about_missing_table(cohort_inputs, tmp_path, capsys):
    first, second = cohort_inputs
    files = [p for p in second.iterdir() if p.name.endswith(".csv") and "moran" not in p.name]
    assert main(["niche-cohort", str(first), *map(str, files), "--outdir", str(tmp_path)]) == 0
    assert "No moran table for S9" in capsys.readouterr().err


def test_cells_without_edges_are_noted(tmp_path):
    # Every centroid twice: the Delaunay triangulation keeps one cell of each pair.
    rng = np.random.default_rng(8)
    xy = np.repeat(rng.uniform(0, 600, (300, 2)), 2, axis=0)
    h5ad = write_slide(tmp_path / "S6.h5ad", xy, ["Tumor_cell_LUAD", "Lymphocyte"] * 300, "S6")
    assert main(["niche", str(h5ad), "--outdir", str(tmp_path), *FAST]) == 0
    notes = pd.read_csv(tmp_path / "S6.niche_notes.csv")
    graph_notes = " ".join(notes.loc[notes["analysis"] == "graph", "note"])
    assert "of 600 analysed cells have no edge in the delaunay graph" in graph_notes


def test_slide_that_does_not_fit_cells_exits_one(cmu_slide, tmp_path, capsys):
    # CMU-1-Small-Region.svs is 2220 x 2967 px; these cells reach 4000 µm = 8016 px.
    rng = np.random.default_rng(9)
    xy = rng.uniform(0, 4000, (300, 2))
    h5ad = write_slide(tmp_path / "big.h5ad", xy, ["Tumor_cell_LUAD", "Lymphocyte"] * 150, "big", mpp=0.499)
    code = main(["niche", str(h5ad), "--outdir", str(tmp_path / "out"), "--slide", str(cmu_slide), *FAST])
    assert code == 1
    assert "outside the 2220 x 2967 px slide CMU-1-Small-Region.svs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
