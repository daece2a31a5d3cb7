"""Calibration on tissue pixels: real images with glass in view, and the threshold estimate."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from shest.cli.main import main
from shest.segmentation.calibration import calibrate, calibration_windows, slide_tissue
from shest.segmentation.table import read_cell_table
from shest.segmentation.watershed import WatershedSegmenter, estimate_threshold
from shest.segmentation.wsi import plan_reads
from shest.slide import open_slide

# The TMA core segmented with the watershed backend gave 3885 nuclei when this was
# written; before calibration ignored glass it gave 89.
TMA_MIN_NUCLEI = 3000
# The top 1750 rows of CMU-1-Small-Region (about half of them glass) gave 1482 nuclei;
# before calibration ignored glass they gave 155.
CMU_CROP_MIN_NUCLEI = 1100


def run_qc_and_segment(slide, outdir, *segment_args) -> int:
    assert main(["qc", str(slide), "--outdir", str(outdir), "--sample", "S"]) == 0
    return main([
        "segment", str(slide), "--plan", str(outdir / "S.tiles.json"), "--backend", "watershed",
        "--outdir", str(outdir), "--sample", "S", *segment_args,
    ])


def mqc_row(outdir) -> dict[str, str]:
    lines = [line for line in (outdir / "S_segmentation_mqc.tsv").read_text().splitlines() if not line.startswith("#")]
    return dict(zip(lines[0].split("\t"), lines[1].split("\t")))


@pytest.fixture(scope="module")
def tma_run(tmp_path_factory):
    from conftest import data_file

    slide = data_file("tiles/tma_core_he.ome.tif")
    outdir = tmp_path_factory.mktemp("tma")
    code = run_qc_and_segment(slide, outdir)
    return code, outdir


def test_tma_core_exit_code(tma_run):
    assert tma_run[0] == 0


def test_tma_core_keeps_packed_nuclei(tma_run):
    table, _ = read_cell_table(tma_run[1] / "S.cells.parquet")
    assert len(table) >= TMA_MIN_NUCLEI


def test_tma_core_threshold_set_by_tissue(tma_run):
    _, metadata = read_cell_table(tma_run[1] / "S.cells.parquet")
    # Glass pulled the estimate down to 0.034 OD, where nuclei merge into blobs.
    assert metadata["segmentation"]["threshold_od"] > 0.2


def test_tma_core_has_no_density_warning(tma_run):
    row = mqc_row(tma_run[1])
    assert row["warnings"] == "0"


def test_tma_core_calibration_windows_exclude_glass(ome_tile):
    with open_slide(ome_tile) as slide:
        windows = calibration_windows(slide, plan_reads(slide, 0.5))
    assert len(windows) == 1
    # QC finds tissue on 71 % of the image; the corners of the round core are glass.
    assert windows[0].tissue.mean() == pytest.approx(0.71, abs=0.03)
    assert not windows[0].tissue[0, 0]


def write_ome(path, rgb: np.ndarray, mpp: float):
    tifffile.imwrite(
        path, rgb, photometric="rgb", tile=(256, 256), ome=True,
        metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp},
    )
    return path


def test_cmu_crop_with_glass_keeps_nuclei(cmu_slide, tmp_path):
    with open_slide(cmu_slide) as slide:
        rgb = slide.read_region((0, 0), 0, (slide.dimensions[0], 1750))
        mpp = slide.mpp
    crop = write_ome(tmp_path / "crop.ome.tif", rgb, mpp)
    outdir = tmp_path / "out"
    assert run_qc_and_segment(crop, outdir) == 0
    table, _ = read_cell_table(outdir / "S.cells.parquet")
    assert len(table) >= CMU_CROP_MIN_NUCLEI


def glass_threshold(path) -> tuple[float, tuple[float, float, float]]:
    segmenter = WatershedSegmenter()
    with open_slide(path) as slide:
        stains = calibrate(slide, segmenter, plan_reads(slide, 0.5))
    return segmenter.threshold_od, stains.hematoxylin


def test_more_glass_leaves_calibration_unchanged(ome_tile, tmp_path):
    with open_slide(ome_tile) as slide:
        rgb = slide.read_region((0, 0), 0, slide.dimensions)
        mpp = slide.mpp
    glass = np.median(rgb[:20, :20].reshape(-1, 3), axis=0).astype(np.uint8)
    height, width = rgb.shape[:2]
    padded = np.empty((height, 2 * width, 3), dtype=np.uint8)
    padded[:] = glass
    padded[:, :width] = rgb
    threshold, hematoxylin = glass_threshold(write_ome(tmp_path / "core.ome.tif", rgb, mpp))
    padded_threshold, padded_hematoxylin = glass_threshold(write_ome(tmp_path / "padded.ome.tif", padded, mpp))
    assert padded_threshold == pytest.approx(threshold, rel=0.02)
    assert np.allclose(padded_hematoxylin, hematoxylin, atol=0.01)


def test_slide_tissue_matches_qc_mask(ome_tile, tmp_path):
    assert main(["qc", str(ome_tile), "--outdir", str(tmp_path), "--sample", "S"]) == 0
    qc_mask = np.asarray(Image.open(tmp_path / "S.tissue_mask.png")) > 0
    with open_slide(ome_tile) as slide:
        tissue = slide_tissue(slide)
    assert np.array_equal(tissue.mask, qc_mask)


# --- threshold estimate --------------------------------------------------------------


def mixture(flat_share: float, seed: int = 0) -> np.ndarray:
    """Smoothed hematoxylin values: flat background near 0, stroma at 0.15 OD, nuclei at 0.8 OD."""
    rng = np.random.default_rng(seed)
    n = 200_000
    flat = np.abs(rng.normal(0.0, 0.008, int(n * flat_share)))
    rest = n - len(flat)
    stroma = rng.normal(0.15, 0.05, int(rest * 0.7))
    nuclei = rng.normal(0.8, 0.12, rest - len(stroma))
    return np.concatenate([flat, stroma, nuclei]).astype(np.float32)


def test_threshold_without_flat_background_between_stroma_and_nuclei():
    threshold = estimate_threshold(mixture(0.0))
    assert 0.25 < threshold < 0.7


@pytest.mark.parametrize("flat_share", [0.3, 0.6, 0.9])
def test_threshold_ignores_flat_background(flat_share):
    # Glass and nucleus-free tissue make a spike just above 0 that must not become the triangle's peak.
    assert estimate_threshold(mixture(flat_share)) == pytest.approx(estimate_threshold(mixture(0.0)), rel=0.15)


def test_threshold_of_flat_values_only():
    # Nothing but flat background: the estimate stays on those values rather than failing.
    values = np.abs(np.random.default_rng(1).normal(0.0, 0.008, 50_000)).astype(np.float32)
    assert estimate_threshold(values) < 0.05


def test_metadata_records_region_flags(tma_run):
    _, metadata = read_cell_table(tma_run[1] / "S.cells.parquet")
    assert metadata["plan"]["tissue_region"] is True
    assert metadata["plan"]["roi"] is False

