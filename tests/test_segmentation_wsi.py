"""Whole-slide segmentation: seams, ownership, chunks and reads at other resolutions."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import shapely
from PIL import Image

from shest.segmentation.merge import merge_chunk_tables
from shest.segmentation.runner import segment_slide
from shest.segmentation.synthetic import Nucleus, render_he, scatter_nuclei, write_pyramidal_tiff
from shest.segmentation.table import write_cell_table
from shest.segmentation.watershed import WatershedSegmenter
from shest.segmentation.wsi import plan_reads
from shest.slide import open_slide
from shest.tiling import make_tile_plan

MPP = 0.5
SIZE = 600  # px, 300 µm
TILE_UM = 100.0  # 200 px tiles
OVERLAP_UM = 32.0  # 64 px overlap: cores of 136 px
STRIDE = 136


def seam_nuclei() -> list[Nucleus]:
    """Nuclei on a 34 px grid: every 4th grid line is a core boundary of the 100 µm plan.

    Centres are jittered by up to 2 px, so seam nuclei fall on either side of the
    seam (or exactly on it), and the first row and column are cut by the slide edge.
    """
    rng = np.random.default_rng(7)
    nuclei = []
    for y in range(0, SIZE, 34):
        for x in range(0, SIZE, 34):
            jitter = rng.uniform(-2, 2, 2)
            radius = rng.uniform(6, 9)
            nuclei.append(Nucleus(x + jitter[0], y + jitter[1], radius, radius * rng.uniform(0.7, 1.0), rng.uniform(0, 3)))
    return nuclei


@pytest.fixture(scope="module")
def seam_slide(tmp_path_factory):
    nuclei = seam_nuclei()
    rgb, truth = render_he((SIZE, SIZE), nuclei, seed=11)
    path = tmp_path_factory.mktemp("seams") / "seams.png"
    Image.fromarray(rgb).save(path)
    return path, nuclei, truth


def plan_for(slide, tile_size_um: float, overlap_um: float = OVERLAP_UM, chunks: int = 1):
    plan = make_tile_plan(
        np.ones((4, 4), dtype=bool), max(slide.dimensions) / 4, slide.dimensions, slide.mpp, slide.path.stem,
        target_mpp=0.5, tile_size_um=tile_size_um, overlap_um=overlap_um,
    )
    return plan.split(chunks)


def segment(path, tile_size_um: float, overlap_um: float = OVERLAP_UM, mpp: float = MPP):
    with open_slide(path, mpp=mpp) as slide:
        plan = plan_for(slide, tile_size_um, overlap_um)
        return segment_slide(slide, plan, WatershedSegmenter(), "seams").table


def truth_centroids(truth: np.ndarray) -> np.ndarray:
    """Continuous (x, y) centroid of every labelled nucleus, in label order."""
    ids = truth.ravel()
    rows, cols = np.divmod(np.arange(truth.size), truth.shape[1])
    counts = np.bincount(ids)
    present = np.flatnonzero(counts[1:]) + 1
    x = np.bincount(ids, weights=cols)[present] / counts[present] + 0.5
    y = np.bincount(ids, weights=rows)[present] / counts[present] + 0.5
    return np.column_stack([x, y])


def detections_per_nucleus(table, centroids: np.ndarray, tolerance: float) -> np.ndarray:
    found = np.column_stack([table["x"].to_numpy(), table["y"].to_numpy()])
    distances = np.linalg.norm(centroids[:, None, :] - found[None, :, :], axis=2)
    return (distances < tolerance).sum(axis=1)


def overlapping_pairs(table) -> int:
    geometries = table.geometry.to_numpy()
    left, right = table.sindex.query(geometries, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    intersection = shapely.area(shapely.intersection(geometries[left], geometries[right]))
    union = shapely.area(geometries[left]) + shapely.area(geometries[right]) - intersection
    return int((intersection / union >= 0.5).sum())


@pytest.mark.parametrize("tile_size_um", [TILE_UM, 150.0])
def test_every_nucleus_found_once(seam_slide, tile_size_um):
    path, _, truth = seam_slide
    table = segment(path, tile_size_um)
    counts = detections_per_nucleus(table, truth_centroids(truth), tolerance=3.0)
    assert (counts > 1).sum() == 0
    assert (counts == 1).mean() >= 0.98


@pytest.mark.parametrize("tile_size_um", [TILE_UM, 150.0])
def test_no_overlapping_duplicates(seam_slide, tile_size_um):
    path, _, _ = seam_slide
    assert overlapping_pairs(segment(path, tile_size_um)) == 0


def test_seam_nuclei_whole(seam_slide):
    path, _, truth = seam_slide
    tiled = segment(path, TILE_UM)
    whole = segment(path, 400.0)  # one tile covers the slide
    centroids = truth_centroids(truth)
    near_seam = np.abs(((centroids + STRIDE / 2) % STRIDE) - STRIDE / 2).min(axis=1) < 4
    near_seam &= (centroids > 20).all(axis=1)  # leave out nuclei cut by the slide edge
    assert near_seam.sum() >= 20
    tiled_xy = np.column_stack([tiled["x"], tiled["y"]])
    whole_xy = np.column_stack([whole["x"], whole["y"]])
    for x, y in centroids[near_seam]:
        i = int(np.argmin(np.hypot(tiled_xy[:, 0] - x, tiled_xy[:, 1] - y)))
        j = int(np.argmin(np.hypot(whole_xy[:, 0] - x, whole_xy[:, 1] - y)))
        a, b = tiled.geometry.iloc[i], whole.geometry.iloc[j]
        iou = a.intersection(b).area / a.union(b).area
        assert iou > 0.9, f"nucleus at ({x:.0f}, {y:.0f}): IoU {iou:.2f} between tiled and whole-slide outlines"


def test_slide_edge_nuclei_kept(seam_slide):
    path, _, truth = seam_slide
    table = segment(path, TILE_UM)
    centroids = truth_centroids(truth)
    on_edge = (centroids < 6).any(axis=1) & (centroids > 20).any(axis=1)
    counts = detections_per_nucleus(table, centroids[on_edge], tolerance=4.0)
    assert on_edge.sum() >= 10
    assert (counts == 1).mean() >= 0.9


def test_chunks_merge_to_whole_slide_table(seam_slide, tmp_path):
    path, _, _ = seam_slide
    with open_slide(path, mpp=MPP) as slide:
        plan = plan_for(slide, TILE_UM, chunks=3)
        whole = segment_slide(slide, plan, WatershedSegmenter(), "seams")
        chunk_paths = []
        for chunk in range(3):
            result = segment_slide(slide, plan, WatershedSegmenter(), "seams", chunk=chunk)
            chunk_paths.append(tmp_path / f"seams.chunk-{chunk:04d}.cells.parquet")
            write_cell_table(chunk_paths[-1], result.table, result.metadata)
    merged, metadata = merge_chunk_tables(chunk_paths)
    write_cell_table(tmp_path / "merged.parquet", merged, metadata)
    write_cell_table(tmp_path / "whole.parquet", whole.table, whole.metadata)
    assert (tmp_path / "merged.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()


def test_nucleus_wider_than_overlap_dropped(tmp_path, caplog):
    # Core boundary at x = 196 px for 100 µm tiles with a 4 µm overlap (margin 4 px).
    nuclei = [Nucleus(196.5, 100, 9, 9), Nucleus(60, 60, 7, 7)]
    rgb, _ = render_he((300, 300), nuclei, seed=3)
    path = tmp_path / "narrow.png"
    Image.fromarray(rgb).save(path)
    with caplog.at_level(logging.WARNING, logger="shest.segmentation.wsi"):
        table = segment(path, TILE_UM, overlap_um=4.0)
    assert len(table) == 1
    assert "touch a tile border" in caplog.text


def test_resampled_reads_keep_level0_coordinates(tmp_path):
    # A 0.25 µm/px slide segmented at 0.5 µm/px: reads are halved, outputs stay in level-0 px.
    nuclei = scatter_nuclei((800, 800), 0.25, spacing_um=16.0, seed=9)
    rgb, truth = render_he((800, 800), nuclei, seed=9)
    path = tmp_path / "fine.png"
    Image.fromarray(rgb).save(path)
    with open_slide(path, mpp=0.25) as slide:
        assert plan_reads(slide, 0.5).resample == pytest.approx(0.5)
    table = segment(path, TILE_UM, mpp=0.25)
    counts = detections_per_nucleus(table, truth_centroids(truth), tolerance=2.0)
    assert (counts == 1).mean() >= 0.95


def test_pyramid_level_read_keeps_level0_coordinates(tmp_path):
    # 0.125 µm/px with levels at 0.25 and 0.5: the 0.5 µm/px level is read as it is.
    nuclei = scatter_nuclei((1024, 1024), 0.125, spacing_um=16.0, seed=4)
    path = tmp_path / "pyramid.tif"
    write_pyramidal_tiff(path, (1024, 1024), 0.125, nuclei, tile=256, levels=3)
    with open_slide(path) as slide:
        reads = plan_reads(slide, 0.5)
        assert (reads.level, reads.resample) == (2, 1.0)
        plan = plan_for(slide, 64.0, overlap_um=24.0)
        table = segment_slide(slide, plan, WatershedSegmenter(), "pyramid").table
    _, truth = render_he((1024, 1024), nuclei)
    counts = detections_per_nucleus(table, truth_centroids(truth), tolerance=6.0)
    assert (counts == 1).mean() >= 0.9
