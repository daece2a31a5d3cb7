"""Regions of interest and the tissue mask restrict the nuclei, not only the tile plan; QC background ignores the ROI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shest.cli.main import main
from shest.segmentation.table import read_cell_table
from shest.tiling import TilePlan

# A box on CMU-1-Small-Region.svs (level-0 px) that cuts through tissue.
ROI_BOX = (900, 1000, 1800, 2000)
# A box on CMU-1-Small-Region.svs that holds only glass.
GLASS_BOX = (100, 2400, 500, 2900)
# A speck of debris at the top-left corner of CMU-1-Small-Region.svs that the tissue
# mask drops as dust; the watershed backend found 4 nuclei on it.
SPECK_BOX = (0, 0, 60, 120)


def roi_file(path, box) -> str:
    x0, y0, x1, y1 = box
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    feature = {"type": "Feature", "properties": {"objectType": "annotation"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return str(path)


def inside(table, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    x, y = table["x"].to_numpy(), table["y"].to_numpy()
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def segment(slide, outdir, *extra) -> int:
    return main([
        "segment", str(slide), "--plan", str(outdir / "S.tiles.json"), "--backend", "watershed",
        "--outdir", str(outdir), "--sample", "S", *extra,
    ])


def qc_json(outdir) -> dict:
    return json.loads((outdir / "S.qc.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """QC and watershed segmentation of CMU-1-Small-Region: whole slide, ROI, and ROI in two chunks."""
    from conftest import data_file

    slide = data_file("wsi/CMU-1-Small-Region.svs")
    root = tmp_path_factory.mktemp("roi")
    roi = roi_file(root / "box.geojson", ROI_BOX)
    whole, with_roi, chunks = root / "whole", root / "roi", root / "chunks"
    codes = [
        main(["qc", str(slide), "--outdir", str(whole), "--sample", "S"]),
        segment(slide, whole),
        main(["qc", str(slide), "--outdir", str(with_roi), "--sample", "S", "--roi", roi]),
        segment(slide, with_roi),
        main(["qc", str(slide), "--outdir", str(chunks), "--sample", "S", "--roi", roi, "--chunks", "2"]),
        segment(slide, chunks, "--chunk", "0"),
        segment(slide, chunks, "--chunk", "1"),
    ]
    codes.append(main([
        "merge-cells", str(chunks / "S.chunk-0000.cells.parquet"), str(chunks / "S.chunk-0001.cells.parquet"),
        "--outdir", str(chunks / "merged"),
    ]))
    # The same two-chunk plan segmented in one run.
    codes.append(main([
        "segment", str(slide), "--plan", str(chunks / "S.tiles.json"), "--backend", "watershed",
        "--outdir", str(chunks / "one_run"), "--sample", "S",
    ]))
    return {"slide": slide, "codes": codes, "whole": whole, "roi": with_roi, "chunks": chunks}


def test_runs_succeed(runs):
    assert runs["codes"] == [0] * 9


def test_roi_keeps_only_nuclei_inside(runs):
    table, _ = read_cell_table(runs["roi"] / "S.cells.parquet")
    assert len(table) > 500
    assert inside(table, ROI_BOX).all()


def test_roi_nuclei_equal_whole_slide_nuclei_inside(runs):
    whole, _ = read_cell_table(runs["whole"] / "S.cells.parquet")
    roi, _ = read_cell_table(runs["roi"] / "S.cells.parquet")
    expected = whole[inside(whole, ROI_BOX)]
    assert len(roi) == len(expected)
    assert np.array_equal(roi["x"].to_numpy(), expected["x"].to_numpy())
    assert np.array_equal(roi["y"].to_numpy(), expected["y"].to_numpy())


@pytest.mark.parametrize("name", ["S.cells.parquet", "S.nuclei.geojson", "S_segmentation_mqc.tsv"])
def test_roi_chunks_merge_to_one_run(runs, name):
    merged = runs["chunks"] / "merged" / name
    assert merged.read_bytes() == (runs["chunks"] / "one_run" / name).read_bytes()


def test_roi_chunks_hold_the_roi_nuclei(runs):
    merged, _ = read_cell_table(runs["chunks"] / "merged" / "S.cells.parquet")
    roi, _ = read_cell_table(runs["roi"] / "S.cells.parquet")
    assert np.array_equal(merged["x"].to_numpy(), roi["x"].to_numpy())


def test_roi_plan_stores_polygon(runs):
    plan = TilePlan.load(runs["roi"] / "S.tiles.json")
    assert plan.roi.bounds == tuple(float(v) for v in ROI_BOX)


def test_plan_without_roi_stores_none(runs):
    assert TilePlan.load(runs["whole"] / "S.tiles.json").roi is None


def test_nuclei_on_dropped_speck_removed(runs):
    table, _ = read_cell_table(runs["whole"] / "S.cells.parquet")
    assert not inside(table, SPECK_BOX).any()


def test_whole_slide_nuclei_lie_on_tissue(runs):
    table, _ = read_cell_table(runs["whole"] / "S.cells.parquet")
    plan = TilePlan.load(runs["whole"] / "S.tiles.json")
    assert plan.in_region(table["x"].to_numpy(), table["y"].to_numpy()).all()


def test_roi_leaves_background_brightness_unchanged(runs):
    whole = qc_json(runs["whole"])["metrics"]["background_brightness"]
    with_roi = qc_json(runs["roi"])["metrics"]["background_brightness"]
    assert with_roi == pytest.approx(whole, abs=0.5)


def test_roi_run_has_no_warnings(runs):
    assert qc_json(runs["roi"])["warnings"] == []


def test_roi_outside_slide_fails(cmu_slide, tmp_path, capsys):
    roi = roi_file(tmp_path / "far.geojson", (5000, 5000, 6000, 6000))
    code = main(["qc", str(cmu_slide), "--outdir", str(tmp_path / "out"), "--roi", roi])
    message = capsys.readouterr().err
    assert code == 1
    assert "far.geojson lies outside CMU-1-Small-Region.svs" in message
    assert not (tmp_path / "out").exists()


def test_roi_partly_outside_slide_warns(cmu_slide, tmp_path):
    # The slide is 2220 x 2967 px, so half of this box lies below its edge.
    roi = roi_file(tmp_path / "low.geojson", (900, 2467, 1800, 3467))
    assert main(["qc", str(cmu_slide), "--outdir", str(tmp_path), "--sample", "S", "--roi", roi]) == 0
    warnings = qc_json(tmp_path)["warnings"]
    assert len(warnings) == 1
    assert warnings[0].startswith("50.0 % of the region of interest in ")
    assert "low.geojson lies outside the 2220 x 2967 px slide" in warnings[0]


def test_roi_on_glass_warns_with_file_name(cmu_slide, tmp_path):
    roi = roi_file(tmp_path / "glass.geojson", GLASS_BOX)
    assert main(["qc", str(cmu_slide), "--outdir", str(tmp_path), "--sample", "S", "--roi", roi]) == 0
    warnings = qc_json(tmp_path)["warnings"]
    assert len(warnings) == 1
    assert "glass.geojson covers no tissue" in warnings[0]
