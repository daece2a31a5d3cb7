"""``shest infer --model demo`` on a crop of the real CMU slide: AnnData, GeoJSON, summary, failures."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from conftest import data_file
from skimage.color import rgb2hed
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import find_contours, label, regionprops

from shest.cli.main import main
from shest.model.checkpoint import LUNG_CLASSES, LUNG_COLORS
from shest.model.demo import DEMO_GENES
from shest.outputs.anndata import build_anndata

CROP = (800, 1200, 600, 600)  # x, y, width, height in level-0 px: dermis and epidermis
SAMPLE = "cmu"


def segment_crop(slide_path, box) -> gpd.GeoDataFrame:
    """Segment nuclei in a slide crop with scikit-image and return a table with the cell-table columns.

    Coordinates are continuous level-0 pixels (pixel i covers [i, i + 1)), as in the
    tables 'shest segment' writes.
    """
    from shest.slide import open_slide

    x0, y0, width, height = box
    with open_slide(slide_path) as slide:
        rgb = slide.read_region((x0, y0), 0, (width, height))
        mpp = slide.mpp
    hematoxylin = gaussian(rgb2hed(rgb)[..., 0], sigma=1)
    labels = label(hematoxylin > threshold_otsu(hematoxylin))
    rows = []
    for region in regionprops(labels, intensity_image=hematoxylin):
        if region.area < 15:
            continue
        contour = max(find_contours(np.pad(region.image, 1).astype(float), 0.5), key=len)
        xs = contour[:, 1] + region.bbox[1] - 0.5 + x0
        ys = contour[:, 0] + region.bbox[0] - 0.5 + y0
        polygon = shapely.Polygon(np.column_stack([xs, ys]))
        if not polygon.is_valid or polygon.area <= 0:
            continue
        row, col = region.centroid
        rows.append(
            {
                "x": col + 0.5 + x0,
                "y": row + 0.5 + y0,
                "area_um2": region.area * mpp * mpp,
                "perimeter_um": region.perimeter * mpp,
                "eccentricity": region.eccentricity,
                "solidity": region.solidity,
                "hematoxylin_od": region.intensity_mean,
                "bbox_x0": float(region.bbox[1] + x0),
                "bbox_y0": float(region.bbox[0] + y0),
                "bbox_x1": float(region.bbox[3] + x0),
                "bbox_y1": float(region.bbox[2] + y0),
                "tile_id": 0,
                "geometry": polygon,
            }
        )
    table = gpd.GeoDataFrame(rows, geometry="geometry").sort_values(["y", "x"]).reset_index(drop=True)
    table.insert(0, "cell_id", np.arange(1, len(table) + 1, dtype=np.int64))
    table["x_um"] = table["x"] * mpp
    table["y_um"] = table["y"] * mpp
    return table


@pytest.fixture(scope="module")
def slide_path():
    """Aperio SVS, 2220 x 2967 px, 0.499 µm/px (module scope, unlike the shared fixture)."""
    return data_file("wsi/CMU-1-Small-Region.svs")


@pytest.fixture(scope="module")
def cells_table(slide_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("cells") / f"{SAMPLE}.cells.parquet"
    table = segment_crop(slide_path, CROP)
    table.to_parquet(path)
    return path, table


@pytest.fixture(scope="module")
def demo_run(slide_path, cells_table, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("infer")
    code = main(["infer", str(slide_path), "--cells", str(cells_table[0]), "--model", "demo",
                 "--outdir", str(outdir), "--sample", SAMPLE, "--batch-size", "48"])  # fmt: skip
    return code, outdir


@pytest.fixture(scope="module")
def adata(demo_run):
    import anndata as ad

    return ad.read_h5ad(demo_run[1] / f"{SAMPLE}.h5ad")


@pytest.fixture(scope="module")
def cells_geojson(demo_run):
    return gpd.read_file(demo_run[1] / f"{SAMPLE}.cells.geojson")


def expected_predicted_cells(table: pd.DataFrame, mpp: float = 0.499) -> pd.DataFrame:
    """Cells whose larger bbox side lies within ceil(2 / mpp) and ceil(16 / mpp) px (the crop is far from edges)."""
    side = np.maximum(table["bbox_x1"] - table["bbox_x0"], table["bbox_y1"] - table["bbox_y0"])
    return table[(side >= math.ceil(2 / mpp)) & (side <= math.ceil(16 / mpp))]


def test_fixture_has_many_nuclei(cells_table):
    assert len(cells_table[1]) > 150


def test_demo_run_succeeds(demo_run):
    assert demo_run[0] == 0


def test_demo_run_writes_four_outputs(demo_run):
    names = sorted(path.name for path in demo_run[1].iterdir())
    assert names == [
        f"{SAMPLE}.cells.geojson",
        f"{SAMPLE}.h5ad",
        f"{SAMPLE}.overlay.png",
        f"{SAMPLE}_celltypes_mqc.tsv",
    ]


def test_h5ad_cell_count_follows_filters(adata, cells_table):
    predicted = expected_predicted_cells(cells_table[1])
    assert adata.n_obs == len(predicted)
    assert adata.obs["cell_id"].tolist() == predicted["cell_id"].tolist()


def test_h5ad_counts_are_integers_per_gene(adata):
    assert adata.X.dtype == np.int32
    assert adata.var_names.tolist() == list(DEMO_GENES)
    assert adata.X.min() >= 0


def test_h5ad_cell_types_in_model_order(adata):
    assert adata.obs["cell_type"].cat.categories.tolist() == list(LUNG_CLASSES)
    assert adata.uns["cell_type_colors"].tolist() == list(LUNG_COLORS)


def test_h5ad_unassigned_flag_uses_cutoff(adata):
    probability = adata.obs["cell_type_probability"].to_numpy()
    assert np.array_equal(adata.obs["unassigned"].to_numpy(), probability < 0.7)
    assert float(probability.min()) > 1 / 6 - 1e-6
    assert float(probability.max()) <= 1.0


def test_h5ad_coordinates_and_embedding(adata, cells_table):
    table = cells_table[1].set_index("cell_id")
    ids = adata.obs["cell_id"].to_numpy()
    assert np.allclose(adata.obsm["spatial"], table.loc[ids, ["x", "y"]].to_numpy())
    assert np.allclose(adata.obsm["spatial_um"], table.loc[ids, ["x_um", "y_um"]].to_numpy())
    assert adata.obsm["X_embedding"].dtype == np.float16
    assert adata.obsm["X_embedding"].shape == (adata.n_obs, 64)


def test_h5ad_morphology_columns(adata):
    for column in ("area_um2", "perimeter_um", "eccentricity", "solidity", "hematoxylin_od"):
        assert column in adata.obs.columns


def test_h5ad_marks_demo(adata):
    info = adata.uns["shest"]
    assert bool(info["demo"]) is True
    assert bool(info["model"]["demo"]) is True
    assert info["mpp"] == pytest.approx(0.499)
    assert info["probability_cutoff"] == pytest.approx(0.7)
    assert info["version"]
    assert info["tile"]["window_px"] == 32


def test_geojson_one_feature_per_cell(cells_geojson, adata):
    assert len(cells_geojson) == adata.n_obs
    assert cells_geojson["cell_id"].tolist() == adata.obs["cell_id"].tolist()


def test_geojson_geometries_are_valid_polygons(cells_geojson):
    assert bool(cells_geojson.geometry.is_valid.all())
    assert set(cells_geojson.geom_type) == {"Polygon"}


def test_geojson_classification_follows_cutoff(demo_run, adata):
    with open(demo_run[1] / f"{SAMPLE}.cells.geojson", encoding="utf-8") as handle:
        collection = json.load(handle)
    by_id = adata.obs.set_index("cell_id")
    for item in collection["features"]:
        properties = item["properties"]
        row = by_id.loc[properties["cell_id"]]
        expected = "Unassigned" if row["unassigned"] else row["cell_type"]
        assert properties["classification"]["name"] == f"{expected} (demo)"
        assert properties["cell_type"] == row["cell_type"]
        assert properties["objectType"] == "cell"
        assert properties["demo"] is True
        assert item["nucleusGeometry"] == item["geometry"]


def test_geojson_colours_are_rgb_integer_lists(demo_run):
    with open(demo_run[1] / f"{SAMPLE}.cells.geojson", encoding="utf-8") as handle:
        collection = json.load(handle)
    colours = {tuple(item["properties"]["classification"]["color"]) for item in collection["features"]}
    palette = {tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in LUNG_COLORS} | {(160, 160, 160)}
    assert colours <= palette
    assert collection["shest"]["demo"] is True


def test_geojson_measurements(cells_geojson):
    measurements = cells_geojson["measurements"].iloc[0]
    if isinstance(measurements, str):
        measurements = json.loads(measurements)
    assert 0 < measurements["cell_type_probability"] <= 1
    assert measurements["area_um2"] > 0


def test_summary_table_counts(demo_run, adata):
    path = demo_run[1] / f"{SAMPLE}_celltypes_mqc.tsv"
    text = path.read_text(encoding="utf-8")
    assert "# id: shest_celltypes" in text
    assert "DEMO MODEL" in text
    table = pd.read_csv(path, sep="\t", comment="#")
    row = table.iloc[0]
    assert row["Sample"] == SAMPLE
    assert row["cells"] == adata.n_obs
    assert row["unassigned"] == int(adata.obs["unassigned"].sum())
    assert sum(row[name] for name in LUNG_CLASSES) == row["assigned"]
    assert row["demo"] == "yes"


def test_overlay_is_png(demo_run):
    from PIL import Image

    with Image.open(demo_run[1] / f"{SAMPLE}.overlay.png") as image:
        assert image.format == "PNG"
        assert image.height >= 1024


def test_demo_overlay_has_red_band(demo_run):
    from PIL import Image

    from shest.outputs.overlay import DEMO_BAND_COLOR

    with Image.open(demo_run[1] / f"{SAMPLE}.overlay.png") as image:
        rgb = image.convert("RGB")
        # Corners of the band, clear of its text.
        assert rgb.getpixel((1, 1)) == DEMO_BAND_COLOR
        assert rgb.getpixel((rgb.width - 2, 1)) == DEMO_BAND_COLOR
        assert rgb.getpixel((1, rgb.height // 2)) != DEMO_BAND_COLOR


def test_cutoff_option_changes_only_flags(cmu_slide, cells_table, adata, tmp_path):
    code = main(["infer", str(cmu_slide), "--cells", str(cells_table[0]), "--model", "demo",
                 "--outdir", str(tmp_path), "--sample", SAMPLE, "--probability-cutoff", "0.5"])  # fmt: skip
    import anndata as ad

    second = ad.read_h5ad(tmp_path / f"{SAMPLE}.h5ad")
    assert code == 0
    assert second.obs["cell_type"].tolist() == adata.obs["cell_type"].tolist()
    assert int(second.obs["unassigned"].sum()) == int((adata.obs["cell_type_probability"] < 0.5).sum())


def test_unassigned_cells_keep_predictions():
    cells = pd.DataFrame({"cell_id": [1, 2], "x": [1.0, 2.0], "y": [3.0, 4.0]})
    adata = build_anndata(
        cells, np.array([2, 0]), np.array([0.4, 0.9], dtype=np.float32), np.zeros((2, 3), dtype=np.int32),
        np.zeros((2, 4)), list(LUNG_CLASSES), list(LUNG_COLORS), ["A", "B", "C"], 0.5, 0.7, {"demo": True},
    )  # fmt: skip
    assert adata.obs["unassigned"].tolist() == [True, False]
    assert adata.obs["cell_type"].tolist() == ["Macrophage", "Alveolar_cell"]


def test_no_nuclei_gives_clear_error(cmu_slide, cells_table, tmp_path, capsys):
    empty = cells_table[1].iloc[:0]
    path = tmp_path / "empty.cells.parquet"
    empty.to_parquet(path)
    outdir = tmp_path / "out"
    code = main(["infer", str(cmu_slide), "--cells", str(path), "--model", "demo", "--outdir", str(outdir)])
    assert code == 3  # nothing to predict: the exit code that workflows may skip
    assert "contains no nuclei" in capsys.readouterr().err
    assert not outdir.exists() or not any(outdir.iterdir())


def test_all_nuclei_filtered_gives_clear_error(cmu_slide, cells_table, tmp_path, capsys):
    path = tmp_path / "huge.cells.parquet"
    huge = cells_table[1].head(5).copy()
    huge["bbox_x1"] = huge["bbox_x0"] + 200.0
    huge.to_parquet(path)
    code = main(["infer", str(cmu_slide), "--cells", str(path), "--model", "demo", "--outdir", str(tmp_path / "o")])
    assert code == 3
    assert "5 larger than 16.0 µm" in capsys.readouterr().err


def test_missing_checkpoint_fails_before_inference(cmu_slide, cells_table, tmp_path, capsys):
    code = main(["infer", str(cmu_slide), "--cells", str(cells_table[0]), "--checkpoint", str(tmp_path / "absent.pth"),
                 "--outdir", str(tmp_path / "o")])  # fmt: skip
    assert code == 1
    assert "Checkpoint not found" in capsys.readouterr().err


def test_missing_cells_table(cmu_slide, tmp_path, capsys):
    code = main(["infer", str(cmu_slide), "--cells", str(tmp_path / "absent.parquet"), "--model", "demo"])
    assert code == 1
    assert "Cell table not found" in capsys.readouterr().err


def test_inverted_nucleus_bounds_rejected(slide_path, cells_table, tmp_path, capsys):
    code = main(["infer", str(slide_path), "--cells", str(cells_table[0]), "--model", "demo",
                 "--min-nucleus-um", "20", "--outdir", str(tmp_path)])  # fmt: skip
    assert code == 1
    assert "Invalid nucleus size bounds 20.0 and 16.0 µm" in capsys.readouterr().err


def test_cells_of_another_slide_rejected(slide_path, cells_table, tmp_path, capsys):
    from shest.segmentation.table import write_cell_table

    path = tmp_path / "other.cells.parquet"
    write_cell_table(path, cells_table[1], {"slide": "other.svs", "slide_width": 4000, "slide_height": 3000})
    code = main(["infer", str(slide_path), "--cells", str(path), "--model", "demo", "--outdir", str(tmp_path / "o")])
    assert code == 1
    assert "segmented from a slide of 4000 x 3000 px (other.svs)" in capsys.readouterr().err


def test_h5ad_keeps_device_but_no_timing(adata):
    info = adata.uns["shest"]
    assert info["device"] == "cpu"
    assert not any("second" in key for key in info)


def test_tile_workers_write_identical_files(slide_path, cells_table, tmp_path):
    # 16 cells per batch gives 20 batches, enough for two worker processes.
    for workers in ("0", "2"):
        code = main(["infer", str(slide_path), "--cells", str(cells_table[0]), "--model", "demo", "--outdir",
                     str(tmp_path / workers), "--sample", SAMPLE, "--batch-size", "16", "--workers", workers])  # fmt: skip
        assert code == 0
    for path in sorted((tmp_path / "0").iterdir()):
        assert (tmp_path / "2" / path.name).read_bytes() == path.read_bytes(), f"{path.name} differs"


def test_checkpoint_nucleus_bounds_apply_by_default(slide_path, cells_table, tmp_path):
    import anndata as ad

    from shest.model.demo import build_demo_model
    from shest.outputs import infer_slide

    model = build_demo_model()
    model.tile = {**model.tile, "max_nucleus_um": 5.0}
    infer_slide(slide_path, cells_table[0], tmp_path, SAMPLE, model=model, batch_size=64)
    info = ad.read_h5ad(tmp_path / f"{SAMPLE}.h5ad").uns["shest"]
    assert info["tile"]["max_nucleus_um"] == 5.0
    assert info["tile"]["min_nucleus_um"] == 2.0


def test_explicit_nucleus_bound_overrides_checkpoint(slide_path, cells_table, tmp_path):
    import anndata as ad

    from shest.model.demo import build_demo_model
    from shest.outputs import infer_slide

    model = build_demo_model()
    model.tile = {**model.tile, "max_nucleus_um": 5.0}
    infer_slide(slide_path, cells_table[0], tmp_path, SAMPLE, model=model, max_nucleus_um=16.0)
    adata = ad.read_h5ad(tmp_path / f"{SAMPLE}.h5ad")
    assert adata.uns["shest"]["tile"]["max_nucleus_um"] == 16.0
    assert adata.n_obs == len(expected_predicted_cells(cells_table[1]))


def test_cell_table_of_another_format_rejected(slide_path, cells_table, tmp_path, capsys):
    from shest.segmentation.table import write_cell_table

    path = tmp_path / "future.cells.parquet"
    write_cell_table(path, cells_table[1], {"format": "shest-cells/99"})
    code = main(["infer", str(slide_path), "--cells", str(path), "--model", "demo", "--outdir", str(tmp_path / "o")])
    assert code == 1
    assert "format 'shest-cells/99'" in capsys.readouterr().err


def test_cells_file_that_is_not_parquet_rejected(slide_path, tmp_path, capsys):
    path = tmp_path / "text.cells.parquet"
    path.write_text("cell_id,x,y\n1,2,3\n")
    code = main(["infer", str(slide_path), "--cells", str(path), "--model", "demo", "--outdir", str(tmp_path / "o")])
    assert code == 1
    assert "is not a Parquet file" in capsys.readouterr().err
