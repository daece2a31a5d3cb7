"""`shest segment` on a real slide, and its handling of bad inputs."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest

from shest.cli.main import main
from shest.segmentation.table import read_cell_table
from shest.slide import open_slide
from shest.tiling import make_tile_plan

MASK_DOWNSAMPLE = 300.0


def cmu_plan(slide_path, tissue: bool = True, chunks: int = 1):
    """A plan over a small tissue area of CMU-1-Small-Region (one mask cell of 150 µm)."""
    with open_slide(slide_path) as slide:
        width, height = slide.dimensions
        mask = np.zeros((int(np.ceil(height / MASK_DOWNSAMPLE)), int(np.ceil(width / MASK_DOWNSAMPLE))), dtype=bool)
        if tissue:
            mask[5, 3] = True
        plan = make_tile_plan(mask, MASK_DOWNSAMPLE, (width, height), slide.mpp, slide.path.stem, tile_size_um=256.0)
    return plan.split(chunks)


@pytest.fixture
def small_plan(cmu_slide, tmp_path):
    path = tmp_path / "CMU.tiles.json"
    cmu_plan(cmu_slide, chunks=2).save(path)
    return path


def segment(*args) -> int:
    """Run `shest segment`, with the weight-free backend unless the test names one."""
    argv = ["segment", *map(str, args)]
    if "--backend" not in argv and "--segmenter" not in argv:
        argv += ["--backend", "watershed"]
    return main(argv)


def test_slide_outputs_written(cmu_slide, small_plan, tmp_path):
    outdir = tmp_path / "out"
    assert segment(cmu_slide, "--plan", small_plan, "--outdir", outdir) == 0
    table, metadata = read_cell_table(outdir / "CMU-1-Small-Region.cells.parquet")
    assert len(table) > 50
    assert metadata["sample"] == "CMU-1-Small-Region"
    assert metadata["segmentation_mpp"] == pytest.approx(0.499, abs=1e-3)
    assert table["cell_id"].tolist() == list(range(1, len(table) + 1))
    features = json.loads((outdir / "CMU-1-Small-Region.nuclei.geojson").read_text(encoding="utf-8"))["features"]
    assert len(features) == len(table)
    assert features[0]["properties"]["objectType"] == "detection"
    assert (outdir / "CMU-1-Small-Region_segmentation_mqc.tsv").read_text().startswith("# id: shest_segmentation")


def test_nuclei_lie_in_planned_tiles(cmu_slide, small_plan, tmp_path):
    assert segment(cmu_slide, "--plan", small_plan, "--outdir", tmp_path) == 0
    table, _ = read_cell_table(tmp_path / "CMU-1-Small-Region.cells.parquet")
    plan = json.loads(small_plan.read_text())
    tiles = {tile["tile_id"]: tile for tile in plan["tiles"]}
    for tile_id, x, y in zip(table["tile_id"], table["x"], table["y"]):
        tile = tiles[int(tile_id)]
        assert tile["core_x0"] <= x < tile["core_x1"]
        assert tile["core_y0"] <= y < tile["core_y1"]


def test_geoparquet_readable_by_geopandas(cmu_slide, small_plan, tmp_path):
    assert segment(cmu_slide, "--plan", small_plan, "--outdir", tmp_path, "--sample", "skin") == 0
    frame = gpd.read_parquet(tmp_path / "skin.cells.parquet")
    assert frame.geometry.geom_type.unique().tolist() == ["Polygon"]
    assert frame.geometry.is_valid.all()


def test_chunk_output_named_with_four_digits(cmu_slide, small_plan, tmp_path):
    assert segment(cmu_slide, "--plan", small_plan, "--chunk", "1", "--outdir", tmp_path) == 0
    names = sorted(path.name for path in tmp_path.iterdir() if not path.name.endswith(".json"))
    assert names == ["CMU-1-Small-Region.chunk-0001.cells.parquet"]


def test_chunk_outside_plan_rejected(cmu_slide, small_plan, tmp_path, capsys):
    assert segment(cmu_slide, "--plan", small_plan, "--chunk", "5", "--outdir", tmp_path / "out") == 1
    assert "--chunk 5 is outside" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_model_file_rejected(cmu_slide, small_plan, tmp_path, capsys):
    missing = tmp_path / "models" / "absent.pth"
    code = segment(cmu_slide, "--plan", small_plan, "--backend", "cellpose", "--cellpose-model", missing, "--outdir", tmp_path)
    assert code == 1
    assert "Cellpose model file not found" in capsys.readouterr().err


def test_empty_tissue_plan_writes_empty_outputs(cmu_slide, tmp_path, capsys):
    plan_path = tmp_path / "empty.tiles.json"
    cmu_plan(cmu_slide, tissue=False).save(plan_path)
    assert segment(cmu_slide, "--plan", plan_path, "--outdir", tmp_path) == 0
    assert "empty" in capsys.readouterr().err
    table, _ = read_cell_table(tmp_path / "CMU-1-Small-Region.cells.parquet")
    assert len(table) == 0
    features = json.loads((tmp_path / "CMU-1-Small-Region.nuclei.geojson").read_text())["features"]
    assert features == []


def test_missing_plan_rejected(cmu_slide, tmp_path, capsys):
    assert segment(cmu_slide, "--plan", tmp_path / "absent.tiles.json", "--outdir", tmp_path) == 1
    assert "Tile plan not found" in capsys.readouterr().err


def test_plan_of_another_slide_rejected(jpeg_no_mpp, small_plan, tmp_path, capsys):
    assert segment(jpeg_no_mpp, "--plan", small_plan, "--mpp", "0.25", "--outdir", tmp_path) == 1
    assert "Use the plan that `shest qc` wrote for this slide" in capsys.readouterr().err


def test_mpp_differing_from_plan_rejected(cmu_slide, small_plan, tmp_path, capsys):
    assert segment(cmu_slide, "--plan", small_plan, "--mpp", "0.25", "--outdir", tmp_path) == 1
    assert "Pass the same --mpp" in capsys.readouterr().err


def test_segmentation_finer_than_slide_rejected(cmu_slide, small_plan, tmp_path, capsys):
    assert segment(cmu_slide, "--plan", small_plan, "--segmentation-mpp", "0.2", "--outdir", tmp_path) == 1
    assert "finer than the slide" in capsys.readouterr().err


def test_gzip_geojson_option(cmu_slide, small_plan, tmp_path):
    assert segment(cmu_slide, "--plan", small_plan, "--geojson-gzip", "--outdir", tmp_path) == 0
    assert (tmp_path / "CMU-1-Small-Region.nuclei.geojson.gz").exists()
    assert not (tmp_path / "CMU-1-Small-Region.nuclei.geojson").exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--segmentation-mpp", "1e9", "--segmentation-mpp must be at most 2, found 1e+09"),
        ("--threshold-od", "3", "--threshold-od must be at most 2.4, found 3"),
        ("--threshold-scale", "10", "--threshold-scale must be from 0.25 to 4, found 10"),
        ("--threshold-scale", "0.01", "--threshold-scale must be from 0.25 to 4, found 0.01"),
        ("--max-area-um2", "1e5", "--max-area-um2 must be at most 2000, found 100000"),
        ("--min-area-um2", "300", "--min-area-um2 (300) must be smaller than --max-area-um2 (200)"),
        ("--diameter-um", "500", "--diameter-um must be at most 50, found 500"),
    ],
)
def test_out_of_range_option_rejected(cmu_slide, small_plan, tmp_path, capsys, option, value, message):
    outdir = tmp_path / "out"
    assert segment(cmu_slide, "--plan", small_plan, "--outdir", outdir, option, value) == 1
    assert message in capsys.readouterr().err
    assert not outdir.exists()


def test_plan_target_coarser_than_limit_names_option(cmu_slide, tmp_path, capsys):
    document = cmu_plan(cmu_slide).to_dict()
    document["target_mpp"] = 50.0
    path = tmp_path / "coarse.tiles.json"
    path.write_text(json.dumps(document))
    assert segment(cmu_slide, "--plan", path, "--outdir", tmp_path / "out") == 1
    assert "--target-mpp of `shest qc`" in capsys.readouterr().err


def test_option_check_rejects_non_finite():
    from shest.cli.bounds import check_option
    from shest.errors import InputError

    with pytest.raises(InputError, match="--threshold-od must be a finite number, found inf"):
        check_option("--threshold-od", float("inf"), 2.4)


def test_watershed_parameters_reject_non_finite():
    from shest.errors import InputError
    from shest.segmentation.watershed import WatershedParams

    with pytest.raises(InputError, match="threshold_scale must be a finite number"):
        WatershedParams(threshold_scale=float("inf"))


def test_segment_and_infer_take_mpp_from_qc(jpeg_no_mpp, tmp_path):
    # The JPEG records no µm/px: only shest qc is given --mpp.
    assert main(["qc", str(jpeg_no_mpp), "--mpp", "0.25", "--sample", "tum", "--outdir", str(tmp_path)]) == 0
    code = main(["segment", str(jpeg_no_mpp), "--plan", str(tmp_path / "tum.tiles.json"), "--backend", "watershed",
                 "--outdir", str(tmp_path), "--sample", "tum"])  # fmt: skip
    assert code == 0
    table, metadata = read_cell_table(tmp_path / "tum.cells.parquet")
    assert len(table) > 50
    assert metadata["mpp"] == 0.25
    code = main(["infer", str(jpeg_no_mpp), "--cells", str(tmp_path / "tum.cells.parquet"), "--model", "demo",
                 "--outdir", str(tmp_path), "--sample", "tum"])  # fmt: skip
    assert code == 0
    assert (tmp_path / "tum.h5ad").is_file()

