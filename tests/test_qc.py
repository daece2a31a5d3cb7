"""Slide QC metrics and the `shest qc` command: outputs, warnings and failures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image
from scipy import ndimage as ndi

from shest.cli.main import main
from shest.errors import InputError
from shest.qc import PlanParams, QcParams, assess_slide, run_slide_qc
from shest.qc import outputs as qc_outputs
from shest.qc.background import measure_background
from shest.qc.focus import FocusResult, laplacian_variance
from shest.qc.ink import summarize_ink
from shest.qc.objective import check_mpp_override, check_objective_power
from shest.qc.stain import StainSampler, estimate_stains
from shest.qc.tiles import TissueTile
from shest.slide import open_slide
from shest.slide.mpp import PixelSize
from shest.stain import RUIFROK_EOSIN, RUIFROK_HEMATOXYLIN, angle_deg, macenko_vectors, stain_concentrations
from shest.tiling import TilePlan
from shest.tissue import Thumbnail, detect_tissue

SMALL = ["--thumbnail-min-side", "256", "--focus-max-tiles", "24"]
SMALL_PARAMS = QcParams(thumbnail_min_side=256)
OUTPUT_SUFFIXES = (".qc.json", "_qc_mqc.tsv", ".thumbnail.png", ".tissue_mask.png", ".tissue.geojson", ".tiles.json")


def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def he_tissue(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Full-resolution H&E-like texture: pink stroma with blurred purple nuclei."""
    rng = np.random.default_rng(seed)
    nuclei = ndi.gaussian_filter((rng.random((height, width)) < 0.02).astype(np.float32), 1.5)
    nuclei = np.clip(nuclei / nuclei.max() * 3, 0, 1)[..., None]
    image = np.float32((215, 130, 185)) * (1 - nuclei) + np.float32((110, 60, 150)) * nuclei
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_slide(
    path,
    size: int = 1536,
    tissue: tuple[int, int, int, int] | None = (256, 256, 1280, 1280),
    background: int = 246,
    blur_sigma: float = 0.0,
    ink: tuple[int, int, int, int] | None = None,
):
    """Write a tiled TIFF at 0.5 µm/px with a square of tissue (x0, y0, x1, y1) on glass."""
    rng = np.random.default_rng(1)
    image = (background + rng.integers(-3, 4, (size, size, 3))).clip(0, 255).astype(np.uint8)
    if tissue is not None:
        x0, y0, x1, y1 = tissue
        patch = he_tissue(y1 - y0, x1 - x0)
        if blur_sigma:
            patch = np.stack(
                [ndi.gaussian_filter(patch[..., c].astype(np.float32), blur_sigma) for c in range(3)], axis=-1
            ).astype(np.uint8)
        image[y0:y1, x0:x1] = patch
    if ink is not None:
        x0, y0, x1, y1 = ink
        image[y0:y1, x0:x1] = (40, 160, 90)
    tifffile.imwrite(
        path, image, tile=(256, 256), photometric="rgb", resolution=(20000, 20000), resolutionunit="CENTIMETER"
    )
    return path


def outputs_in(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- focus ---------------------------------------------------------------------------


def test_laplacian_variance_of_flat_image_is_zero():
    assert laplacian_variance(np.full((64, 64, 3), 200, dtype=np.uint8)) == 0.0


def test_laplacian_variance_drops_with_blur():
    sharp = he_tissue(256, 256)
    blurred = np.stack([ndi.gaussian_filter(sharp[..., c], 2) for c in range(3)], axis=-1)
    assert laplacian_variance(blurred) < laplacian_variance(sharp) / 10


def test_blurred_fraction_counts_tiles_below_threshold():
    focus = FocusResult(mpp=0.5, tile_px=64, threshold=100.0, eligible_tiles=2)
    tile = TissueTile(0, 0, 64, 64, 1.0)
    focus.add(tile, he_tissue(64, 64))
    focus.add(tile, np.full((64, 64, 3), 200, dtype=np.uint8))
    assert focus.blurred_fraction == 0.5
    assert focus.to_dict()["tiles_scored"] == 2


def test_focus_without_tiles_is_none():
    focus = FocusResult(mpp=0.5, tile_px=64, threshold=100.0, eligible_tiles=0)
    assert focus.blurred_fraction is None
    assert focus.median is None


# --- stain vectors -------------------------------------------------------------------


def mixed_amounts(n: int = 20_000, seed: int = 0) -> np.ndarray:
    """Stain amounts in which a tenth of the pixels carry a single stain, as Macenko assumes."""
    rng = np.random.default_rng(seed)
    amounts = rng.uniform(0.0, 1.5, (n, 2))
    amounts[: n // 20, 1] = 0.0
    amounts[n // 20 : n // 10, 0] = 0.0
    return amounts


def synthetic_stained_rgb(n: int = 40_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """RGB pixels made by Beer-Lambert mixing of the reference H and E vectors."""
    amounts = mixed_amounts(n, seed)
    vectors = np.stack([unit(RUIFROK_HEMATOXYLIN), unit(RUIFROK_EOSIN)])
    rgb = 255.0 * np.exp(-(amounts @ vectors))
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8).reshape(200, -1, 3), amounts


def test_macenko_recovers_reference_vectors():
    od = mixed_amounts() @ np.stack([unit(RUIFROK_HEMATOXYLIN), unit(RUIFROK_EOSIN)])
    vectors = macenko_vectors(od)
    assert angle_deg(vectors[0], RUIFROK_HEMATOXYLIN) < 3
    assert angle_deg(vectors[1], RUIFROK_EOSIN) < 3


def test_macenko_orders_hematoxylin_first_whatever_the_input_order():
    od = mixed_amounts() @ np.stack([unit(RUIFROK_EOSIN), unit(RUIFROK_HEMATOXYLIN)])
    vectors = macenko_vectors(od)
    assert angle_deg(vectors[0], RUIFROK_HEMATOXYLIN) < 3


def test_macenko_needs_pixels():
    with pytest.raises(ValueError, match="at least 3"):
        macenko_vectors(np.ones((2, 3)))


def test_concentrations_recover_amounts():
    vectors = np.stack([unit(RUIFROK_HEMATOXYLIN), unit(RUIFROK_EOSIN)])
    amounts = np.array([[0.5, 0.2], [1.0, 0.0], [0.1, 0.9]])
    assert np.allclose(stain_concentrations(amounts @ vectors, vectors), amounts)


def test_stains_from_rgb_pixels():
    rgb, _ = synthetic_stained_rgb()
    sampler = StainSampler((255, 255, 255))
    sampler.add(rgb)
    result = estimate_stains(sampler.pixels())
    assert result.hematoxylin_angle_deg < 5
    # Pure eosin has a red OD under beta (0.15) and is dropped, so the eosin estimate
    # comes from pixels with some haematoxylin and leans towards it.
    assert result.eosin_angle_deg < 8


def test_mean_stain_od_matches_amounts():
    rgb, amounts = synthetic_stained_rgb()
    sampler = StainSampler((255, 255, 255))
    sampler.add(rgb)
    result = estimate_stains(sampler.pixels())
    # The sampler keeps pixels with every channel above beta, which favours higher amounts.
    assert 0.8 * amounts[:, 0].mean() < result.mean_hematoxylin_od < 1.5 * amounts[:, 0].mean()


def test_stain_sampler_caps_pixels_per_tile():
    rgb, _ = synthetic_stained_rgb()
    sampler = StainSampler((255, 255, 255))
    sampler.add(rgb)
    sampler.add(rgb)
    assert len(sampler.pixels()) == 2 * sampler.params.pixels_per_tile


def test_stains_need_enough_pixels():
    assert estimate_stains(np.full((10, 3), 0.5)) is None


def test_white_tile_has_no_stained_pixels():
    sampler = StainSampler((250, 250, 250))
    sampler.add(np.full((32, 32, 3), 250, dtype=np.uint8))
    assert len(sampler.pixels()) == 0


# --- objective power and --mpp -------------------------------------------------------


def test_objective_20x_at_half_micron_is_consistent():
    check, warnings = check_objective_power(20.0, 0.499)
    assert check.consistent
    assert warnings == []


def test_objective_40x_at_half_micron_warns():
    check, warnings = check_objective_power(40.0, 0.5)
    assert check.consistent is False
    assert "40x" in warnings[0]
    assert "0.5 µm/px" in warnings[0]


def test_objective_unknown_is_not_checked():
    check, warnings = check_objective_power(None, 0.25)
    assert check.consistent is None
    assert warnings == []


def test_override_far_from_metadata_warns():
    warnings = check_mpp_override(PixelSize(0.25, 0.25, "override"), PixelSize(0.5, 0.5, "vendor"))
    assert "--mpp 0.25" in warnings[0]


def test_override_close_to_metadata_is_quiet():
    assert check_mpp_override(PixelSize(0.26, 0.26, "override"), PixelSize(0.2527, 0.2527, "vendor")) == []


# --- background and ink on synthetic thumbnails --------------------------------------


def thumbnail(image: np.ndarray) -> Thumbnail:
    return Thumbnail(image, 16.0, 16.0, 0.5, 0.5)


def test_background_brightness_of_grey_glass():
    image = np.full((200, 200, 3), 180, dtype=np.uint8)
    image[50:150, 50:150] = (150, 70, 160)
    result = measure_background(detect_tissue(thumbnail(image)))
    assert result.brightness == pytest.approx(180, abs=1)
    assert result.optical_density_reference == (180.0, 180.0, 180.0)


def test_background_absent_when_all_tissue():
    image = np.empty((100, 100, 3), dtype=np.uint8)
    image[:] = (150, 70, 160)
    result = measure_background(detect_tissue(thumbnail(image)))
    assert result.brightness is None
    assert result.optical_density_reference == (255.0, 255.0, 255.0)


def test_ink_fraction_of_marked_area():
    image = np.full((200, 200, 3), 246, dtype=np.uint8)
    image[20:180, 20:100] = (150, 70, 160)  # 12800 px tissue
    image[20:180, 120:160] = (40, 160, 90)  # 6400 px green ink
    result = summarize_ink(detect_tissue(thumbnail(image)))
    assert result.fraction == pytest.approx(6400 / 19200, rel=0.02)
    assert result.area_mm2 == pytest.approx(6400 * 64e-6, rel=0.02)


# --- assess_slide on synthetic slides ------------------------------------------------


def test_sharp_slide_has_no_blurred_tiles(tmp_path):
    with open_slide(write_slide(tmp_path / "sharp.tif")) as slide:
        qc = assess_slide(slide, SMALL_PARAMS)
    assert qc.focus.tiles_scored > 0
    assert qc.focus.blurred_fraction == 0.0


def test_blurred_slide_warns(tmp_path):
    with open_slide(write_slide(tmp_path / "blurred.tif", blur_sigma=3.0)) as slide:
        qc = assess_slide(slide, SMALL_PARAMS)
    assert qc.focus.blurred_fraction == 1.0
    assert any("out of focus" in w for w in qc.warnings)


def test_dark_background_warns(tmp_path):
    with open_slide(write_slide(tmp_path / "dark.tif", background=170)) as slide:
        qc = assess_slide(slide, SMALL_PARAMS)
    assert qc.background.brightness < 200
    assert any("Background brightness" in w for w in qc.warnings)


def test_ink_on_slide_warns(tmp_path):
    path = write_slide(tmp_path / "ink.tif", ink=(1300, 200, 1450, 1400))
    with open_slide(path) as slide:
        qc = assess_slide(slide, SMALL_PARAMS)
    assert qc.ink.fraction > 0.05
    assert any("ink" in w for w in qc.warnings)


def test_override_mismatch_warns(tmp_path):
    with open_slide(write_slide(tmp_path / "s.tif"), mpp=0.25) as slide:
        qc = assess_slide(slide, SMALL_PARAMS)
    assert any("--mpp 0.25" in w for w in qc.warnings)


def test_roi_outside_slide_raises(tmp_path):
    from shapely.geometry import box

    with open_slide(write_slide(tmp_path / "s.tif")) as slide:
        with pytest.raises(InputError, match=r"region of interest in roi.geojson lies outside s.tif"):
            assess_slide(slide, SMALL_PARAMS, roi=box(50_000, 50_000, 60_000, 60_000), roi_name="roi.geojson")


def test_synthetic_tissue_area(tmp_path):
    with open_slide(write_slide(tmp_path / "s.tif")) as slide:
        qc = assess_slide(slide, SMALL_PARAMS)
    # 1024 x 1024 px at 0.5 µm/px.
    assert qc.tissue.area_mm2 == pytest.approx(0.262144, rel=0.03)


# --- shest qc on real slides ---------------------------------------------------------


@pytest.fixture(scope="module")
def cmu_run(tmp_path_factory):
    from conftest import data_file

    slide = data_file("wsi/CMU-1-Small-Region.svs")
    outdir = tmp_path_factory.mktemp("qc_cmu")
    code = main(["qc", str(slide), "--outdir", str(outdir), "--chunks", "2", *SMALL])
    return code, outdir, "CMU-1-Small-Region"


def load_qc(outdir, sample) -> dict:
    return json.loads((outdir / f"{sample}.qc.json").read_text())


def test_qc_cmu_exit_code(cmu_run):
    assert cmu_run[0] == 0


def test_qc_cmu_writes_all_outputs(cmu_run):
    _, outdir, sample = cmu_run
    assert outputs_in(outdir) == sorted(sample + suffix for suffix in OUTPUT_SUFFIXES)


def test_qc_json_fields(cmu_run):
    _, outdir, sample = cmu_run
    qc = load_qc(outdir, sample)
    for key in ("thumbnail", "tissue_area_mm2", "metrics", "warnings", "slide", "plan"):
        assert key in qc
    assert qc["slide"]["mpp_x"] == pytest.approx(0.499)
    assert qc["slide"]["vendor"] == "aperio"


def test_qc_cmu_has_no_warnings(cmu_run):
    _, outdir, sample = cmu_run
    assert load_qc(outdir, sample)["warnings"] == []


def test_qc_cmu_metrics_present(cmu_run):
    _, outdir, sample = cmu_run
    metrics = load_qc(outdir, sample)["metrics"]
    assert metrics["focus_tiles"] > 0
    assert metrics["objective_mpp_consistent"] is True
    assert metrics["mean_hematoxylin_od"] > 0
    assert metrics["mean_eosin_od"] > 0
    assert 0 < metrics["tissue_fraction"] < 1


def test_qc_cmu_stain_vectors_look_like_he(cmu_run):
    _, outdir, sample = cmu_run
    stain = load_qc(outdir, sample)["details"]["stain"]
    assert stain["hematoxylin_angle_to_reference_deg"] < 30
    assert stain["eosin_angle_to_reference_deg"] < 30


def test_mask_png_maps_to_level0(cmu_run):
    _, outdir, sample = cmu_run
    qc = load_qc(outdir, sample)
    mask = np.asarray(Image.open(outdir / f"{sample}.tissue_mask.png"))
    thumb = qc["thumbnail"]
    assert mask.shape == (thumb["height"], thumb["width"])
    assert mask.shape[1] * thumb["downsample_x"] == pytest.approx(qc["slide"]["width"])
    assert mask.shape[0] * thumb["downsample_y"] == pytest.approx(qc["slide"]["height"])


def test_mask_png_area_matches_report(cmu_run):
    _, outdir, sample = cmu_run
    qc = load_qc(outdir, sample)
    mask = np.asarray(Image.open(outdir / f"{sample}.tissue_mask.png")) > 0
    thumb = qc["thumbnail"]
    pixel_mm2 = thumb["downsample_x"] * thumb["downsample_y"] * qc["slide"]["mpp_x"] * qc["slide"]["mpp_y"] / 1e6
    assert mask.sum() * pixel_mm2 == pytest.approx(qc["tissue_area_mm2"], rel=1e-4)


def test_thumbnail_has_outline(cmu_run):
    _, outdir, sample = cmu_run
    thumb = np.asarray(Image.open(outdir / f"{sample}.thumbnail.png"))
    outline = (thumb == (0, 160, 0)).all(axis=-1)
    assert outline.sum() > 100


def test_tissue_geojson_in_level0_pixels(cmu_run):
    import geopandas

    _, outdir, sample = cmu_run
    frame = geopandas.read_file(outdir / f"{sample}.tissue.geojson")
    minx, miny, maxx, maxy = frame.total_bounds
    assert (frame["objectType"] == "annotation").all()
    assert minx >= 0
    assert maxx <= 2220
    assert maxy <= 2967
    assert maxx - minx > 1000


def test_plan_written_in_chunks(cmu_run):
    _, outdir, sample = cmu_run
    plan = TilePlan.load(outdir / f"{sample}.tiles.json")
    assert plan.chunks == 2
    assert len(plan) > 0
    assert {tile.chunk for tile in plan.tiles} == {0, 1}


def test_plan_summary_matches_plan(cmu_run):
    _, outdir, sample = cmu_run
    plan = TilePlan.load(outdir / f"{sample}.tiles.json")
    summary = load_qc(outdir, sample)["plan"]
    assert summary["tile_count"] == len(plan)
    assert sum(summary["tiles_per_chunk"]) == len(plan)


def test_multiqc_table(cmu_run):
    _, outdir, sample = cmu_run
    lines = (outdir / f"{sample}_qc_mqc.tsv").read_text().splitlines()
    header = yaml.safe_load("\n".join(line[2:] for line in lines if line.startswith("# ")))
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    assert header["id"] == "shest_qc"
    assert rows[0][0] == "Sample"
    assert rows[1][0] == sample
    assert len(rows) == 2


def test_qc_output_permissions(cmu_run):
    _, outdir, sample = cmu_run
    mode = (outdir / f"{sample}.qc.json").stat().st_mode & 0o777
    assert mode & 0o044 == 0o044


def test_qc_tcga_without_mpp_fails(tcga_no_mpp_slide, tmp_path, capsys):
    outdir = tmp_path / "out"
    code = main(["qc", str(tcga_no_mpp_slide), "--outdir", str(outdir), *SMALL])
    message = capsys.readouterr().err
    assert code == 1
    assert tcga_no_mpp_slide.name in message
    assert "--mpp" in message
    assert outputs_in(outdir) == []


def test_qc_tcga_with_mpp(tcga_no_mpp_slide, tmp_path):
    code = main(["qc", str(tcga_no_mpp_slide), "--mpp", "0.25", "--outdir", str(tmp_path), *SMALL])
    qc = load_qc(tmp_path, "TCGA-CR-7395-01A-01-TS1")
    assert code == 0
    assert qc["slide"]["mpp_source"] == "override"
    assert qc["plan"]["tile_count"] > 0


def test_qc_ome_tiff(ome_tile, tmp_path):
    code = main(["qc", str(ome_tile), "--outdir", str(tmp_path), *SMALL])
    qc = load_qc(tmp_path, "tma_core_he")
    assert code == 0
    assert qc["slide"]["backend"] == "tiffslide"
    assert qc["slide"]["mpp_x"] == pytest.approx(0.50008, abs=1e-5)


def test_qc_jpeg_smaller_than_one_tile(jpeg_no_mpp, tmp_path):
    code = main(["qc", str(jpeg_no_mpp), "--mpp", "0.25", "--outdir", str(tmp_path), *SMALL])
    qc = load_qc(tmp_path, "tumour_he_no_mpp")
    assert code == 0
    assert qc["plan"]["tile_count"] == 1
    assert any("smaller than one" in w for w in qc["warnings"])


def test_qc_roi_restricts_plan(cmu_slide, tmp_path):
    roi = {
        "type": "FeatureCollection",
        "features": [{
            "type": "Feature",
            "properties": {"objectType": "annotation"},
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [2220, 0], [2220, 1200], [0, 1200], [0, 0]]]},
        }],
    }
    roi_path = tmp_path / "roi.geojson"
    roi_path.write_text(json.dumps(roi))
    outdir = tmp_path / "out"
    code = main(["qc", str(cmu_slide), "--roi", str(roi_path), "--outdir", str(outdir), "--sample", "roi", *SMALL])
    plan = TilePlan.load(outdir / "roi.tiles.json")
    assert code == 0
    assert max(tile.core_y0 for tile in plan.tiles) < 1200
    assert load_qc(outdir, "roi")["details"]["tissue"]["roi_applied"] is True


# --- shest qc on synthetic and damaged slides ----------------------------------------


def test_qc_blank_slide_gives_empty_plan(tmp_path):
    slide = write_slide(tmp_path / "blank.tif", tissue=None)
    outdir = tmp_path / "out"
    code = main(["qc", str(slide), "--outdir", str(outdir), *SMALL])
    qc = load_qc(outdir, "blank")
    assert code == 0
    assert qc["plan"]["tile_count"] == 0
    assert len(TilePlan.load(outdir / "blank.tiles.json")) == 0
    assert any("No tissue" in w for w in qc["warnings"])


def test_qc_blank_slide_geojson_is_empty_collection(tmp_path):
    slide = write_slide(tmp_path / "blank.tif", tissue=None)
    main(["qc", str(slide), "--outdir", str(tmp_path / "out"), *SMALL])
    data = json.loads((tmp_path / "out" / "blank.tissue.geojson").read_text())
    assert data["type"] == "FeatureCollection"
    assert data["features"] == []


def damaged_files(tmp_path, cmu_slide):
    data = cmu_slide.read_bytes()
    files = {
        "random.svs": np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes(),
        "truncated.svs": data[: len(data) * 2 // 3],
        "notes.svs": b"not a slide at all\n",
        "empty.svs": b"",
    }
    paths = []
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content)
        paths.append(path)
    return paths


def test_qc_damaged_slides_fail_without_outputs(tmp_path, cmu_slide, capsys):
    for path in damaged_files(tmp_path, cmu_slide):
        outdir = tmp_path / f"out_{path.stem}"
        code = main(["qc", str(path), "--outdir", str(outdir), *SMALL])
        message = capsys.readouterr().err
        assert code == 1, path.name
        assert path.name in message, path.name
        assert outputs_in(outdir) == [], path.name


@pytest.mark.parametrize("mpp", ["5", "0.01"])
def test_qc_absurd_mpp_shows_value(cmu_slide, tmp_path, capsys, mpp):
    outdir = tmp_path / "out"
    code = main(["qc", str(cmu_slide), "--mpp", mpp, "--outdir", str(outdir), *SMALL])
    message = capsys.readouterr().err
    assert code == 1
    assert f"{mpp} µm/px" in message
    assert outputs_in(outdir) == []


def test_qc_invalid_sample_name(cmu_slide, tmp_path, capsys):
    code = main(["qc", str(cmu_slide), "--sample", "a b", "--outdir", str(tmp_path), *SMALL])
    assert code == 1
    assert "Invalid sample name" in capsys.readouterr().err


def test_qc_too_long_sample_name(cmu_slide, tmp_path, capsys):
    code = main(["qc", str(cmu_slide), "--sample", "a" * 240, "--outdir", str(tmp_path / "out"), *SMALL])
    assert code == 1
    assert "is 240 characters long; give one of at most 128" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_qc_negative_overlap_is_usage_error(cmu_slide, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["qc", str(cmu_slide), "--overlap-um", "-1", "--outdir", str(tmp_path)])
    assert info.value.code == 2


def test_failed_write_leaves_no_outputs(tmp_path, monkeypatch):
    slide = write_slide(tmp_path / "s.tif")
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "s.qc.json").write_text("previous run\n")

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(qc_outputs, "save_mask_png", fail)
    with pytest.raises(OSError, match="disk full"):
        run_slide_qc(slide, outdir, "s", params=SMALL_PARAMS)
    assert outputs_in(outdir) == ["s.qc.json"]
    assert (outdir / "s.qc.json").read_text() == "previous run\n"


def test_run_slide_qc_returns_plan_and_paths(tmp_path):
    slide = write_slide(tmp_path / "s.tif")
    result = run_slide_qc(slide, tmp_path / "out", "s", params=SMALL_PARAMS, plan_params=PlanParams(chunks=3))
    assert result.plan.chunks == 3
    assert all(path.exists() for path in result.paths.values())
    assert math.isclose(result.qc.tissue.area_mm2, load_qc(tmp_path / "out", "s")["tissue_area_mm2"], rel_tol=1e-5)


# --- option bounds -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--focus-mpp", "5", "--focus-mpp must be at most 2, found 5"),
        ("--tile-size-um", "1e6", "--tile-size-um 1e+06 gives tiles of 2000000 px at --target-mpp 0.5"),
        ("--target-mpp", "5", "--target-mpp 5 is outside (0, 2] µm/px"),
        ("--thumbnail-min-side", "100000", "--thumbnail-min-side must be at most 8192, found 100000"),
    ],
)
def test_qc_out_of_range_option_rejected(cmu_slide, tmp_path, capsys, option, value, message):
    outdir = tmp_path / "out"
    assert main(["qc", str(cmu_slide), "--outdir", str(outdir), option, value]) == 1
    assert message in capsys.readouterr().err
    assert outputs_in(outdir) == []


def test_qc_target_finer_than_slide_names_option(tcga_no_mpp_slide, tmp_path, capsys):
    assert main(["qc", str(tcga_no_mpp_slide), "--mpp", "1.0", "--outdir", str(tmp_path)]) == 1
    assert "--target-mpp 0.5 is finer than the slide's 1.0000 µm/px" in capsys.readouterr().err


def test_qc_tile_parameters_reject_non_finite_mpp():
    from shest.qc.tiles import TileSampleParams

    with pytest.raises(ValueError, match="0 < mpp <= 2"):
        TileSampleParams(mpp=math.inf)


def test_background_warning_shows_decimal(tmp_path):
    with open_slide(write_slide(tmp_path / "dark.tif", background=199)) as slide:
        qc = assess_slide(slide, SMALL_PARAMS)
    message = next(w for w in qc.warnings if w.startswith("Background brightness"))
    assert f"Background brightness is {qc.background.brightness:.1f} (0-255), below 200.0" in message


# --- images that are not brightfield colour scans ------------------------------------


def grey_copy(ome_tile, path):
    with open_slide(ome_tile) as slide:
        rgb = slide.read_region((0, 0), 0, slide.dimensions)
    Image.fromarray(rgb).convert("L").save(path)
    return path


def test_greyscale_image_named_as_such(ome_tile, tmp_path):
    path = grey_copy(ome_tile, tmp_path / "grey.png")
    with open_slide(path, mpp=0.5) as slide:
        qc = assess_slide(slide)
    assert len(qc.warnings) == 1
    assert "grey.png is a greyscale image" in qc.warnings[0]


def test_colour_scans_not_called_greyscale(ome_tile, cmu_slide):
    for path in (ome_tile, cmu_slide):
        with open_slide(path) as slide:
            qc = assess_slide(slide, SMALL_PARAMS)
        assert not qc.image.greyscale, path.name
        assert not qc.image.dark, path.name


def test_float_image_read_as_colour_scan(ome_tile, tmp_path):
    with open_slide(ome_tile) as slide:
        rgb = slide.read_region((0, 0), 0, slide.dimensions)
    pixels = rgb.astype(np.float32) / 255
    pixels[0, 0] = 1.02
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, pixels, photometric="rgb", resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    with open_slide(path) as slide:
        qc = assess_slide(slide)
    assert qc.tissue.area_mm2 > 0.3
    assert qc.warnings == []


def test_near_black_image_named_as_such(tmp_path):
    # A fluorescence-like image: black with a few bright spots.
    image = np.zeros((1024, 1024, 3), dtype=np.uint8)
    image[100:140, 100:140] = (40, 200, 60)
    path = tmp_path / "dark.png"
    Image.fromarray(image).save(path)
    with open_slide(path, mpp=0.5) as slide:
        qc = assess_slide(slide, SMALL_PARAMS)
    assert len(qc.warnings) == 1
    assert "of dark.png is near black" in qc.warnings[0]
