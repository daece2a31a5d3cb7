"""Tile building in worker processes: same panes in the same order as in one process, bounded, failures reported."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import torch

from shest.celltiles import TileGeometry, select_cells
from shest.celltiles.quadruple import PaneBatch, build_quadruple_tiles
from shest.celltiles.windows import iter_window_batches, plan_cell_batches
from shest.celltiles.workers import effective_workers, iter_pane_batches
from shest.segmentation.synthetic import scatter_nuclei, write_pyramidal_tiff
from shest.slide import open_slide

MPP = 0.5
SIDE = 1024


@pytest.fixture(scope="module")
def synthetic_slide(tmp_path_factory):
    """A 1024 x 1024 px tiled TIFF with about 1,300 nuclei and their outlines."""
    path = tmp_path_factory.mktemp("slide") / "synthetic.tif"
    nuclei = scatter_nuclei((SIDE, SIDE), MPP, seed=2)
    write_pyramidal_tiff(path, (SIDE, SIDE), MPP, nuclei, levels=1)
    angles = np.linspace(0, 2 * np.pi, 17)[:-1]
    polygons = np.array(
        [
            shapely.Polygon(np.column_stack([n.x + n.radius_x * np.cos(angles), n.y + n.radius_y * np.sin(angles)]))
            for n in nuclei
        ],
        dtype=object,
    )
    x = np.array([n.x for n in nuclei])
    y = np.array([n.y for n in nuclei])
    return path, x, y, polygons


def selected_cells(slide, x, y, polygons):
    geometry = TileGeometry(mpp=slide.mpp)
    selection = select_cells(x, y, np.full(x.size, 10.0), slide.dimensions, geometry)
    return geometry, selection.cx, selection.cy, polygons[selection.keep]


def test_workers_return_same_panes_in_order(synthetic_slide):
    path, x, y, polygons = synthetic_slide
    with open_slide(path) as slide:
        geometry, cx, cy, geoms = selected_cells(slide, x, y, polygons)
        assert effective_workers(slide, cx.size, 64, 2) == 2
        inline = list(iter_pane_batches(slide, cx, cy, geoms, geometry, 64, workers=0))
        parallel = list(iter_pane_batches(slide, cx, cy, geoms, geometry, 64, workers=2))
    assert len(parallel) == len(inline)
    for inline_batch, parallel_batch in zip(inline, parallel):
        assert np.array_equal(inline_batch.positions, parallel_batch.positions)
        assert np.array_equal(inline_batch.rgb, parallel_batch.rgb)
        assert np.array_equal(inline_batch.hematoxylin, parallel_batch.hematoxylin)
        assert np.array_equal(inline_batch.mask, parallel_batch.mask)


def test_worker_panes_cover_every_cell_once(synthetic_slide):
    path, x, y, polygons = synthetic_slide
    with open_slide(path) as slide:
        geometry, cx, cy, geoms = selected_cells(slide, x, y, polygons)
        positions = np.concatenate(
            [batch.positions for batch in iter_pane_batches(slide, cx, cy, geoms, geometry, 100, workers=2)]
        )
    assert np.array_equal(np.sort(positions), np.arange(cx.size))


def test_panes_assemble_to_the_batched_tiles(synthetic_slide):
    path, x, y, polygons = synthetic_slide
    with open_slide(path) as slide:
        geometry, cx, cy, geoms = selected_cells(slide, x, y, polygons)
        panes = next(iter_pane_batches(slide, cx, cy, geoms, geometry, 16, workers=0))
        windows = next(iter_window_batches(slide, cx, cy, geoms, geometry, 16))
    expected = build_quadruple_tiles(windows.windows, windows.pane_vertices)
    buffer = torch.full((32, 3, 224, 224), float("nan"))
    assert torch.equal(panes.to_tiles(), expected)
    assert torch.equal(panes.to_tiles(out=buffer[:16]), expected)


def test_failing_worker_is_reported(synthetic_slide, tmp_path):
    path, x, y, polygons = synthetic_slide
    copy = tmp_path / "copy.tif"
    copy.write_bytes(path.read_bytes())
    with open_slide(copy) as slide:
        geometry, cx, cy, geoms = selected_cells(slide, x, y, polygons)
        copy.unlink()  # the workers cannot open the slide any more
        with pytest.raises(RuntimeError, match="tile worker process failed"):
            list(iter_pane_batches(slide, cx, cy, geoms, geometry, 64, workers=2))


def test_few_batches_are_built_inline(synthetic_slide):
    path = synthetic_slide[0]
    with open_slide(path) as slide:
        assert effective_workers(slide, n_cells=128, batch_size=64, workers=2) == 0


def test_in_memory_slides_are_built_inline():
    class ArraySlide:
        dimensions = (100, 100)

    assert effective_workers(ArraySlide(), n_cells=10_000, batch_size=64, workers=4) == 0


def test_batches_follow_block_order_and_size():
    geometry = TileGeometry(mpp=0.5)
    xs, ys = np.meshgrid(np.arange(20, 2000, 40), np.arange(20, 2000, 40))
    cx, cy = xs.ravel(), ys.ravel()
    polygons = np.array([shapely.box(a - 4, b - 4, a + 4, b + 4) for a, b in zip(cx, cy)], dtype=object)
    batches = list(plan_cell_batches(cx, cy, polygons, geometry, 64))
    assert [len(b) for b in batches[:-1]] == [64] * (len(batches) - 1)
    blocks = np.concatenate([b.block for b in batches])
    assert np.all(np.diff(blocks) >= 0)


def test_pane_batch_length():
    panes = PaneBatch(
        positions=np.arange(3),
        rgb=np.zeros((3, 3, 4, 4), np.float32),
        hematoxylin=np.zeros((3, 3, 4, 4), np.uint8),
        mask=np.zeros((3, 4, 4), bool),
    )
    assert len(panes) == 3
