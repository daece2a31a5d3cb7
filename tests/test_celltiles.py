"""Cell windows and quadruple tiles: geometry, filters, hand-computed panes, batched vs reference."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import shapely
import torch
import torch.nn.functional as F
from skimage.color import hed2rgb, hed_from_rgb, rgb2hed, rgb_from_hed
from skimage.draw import polygon2mask

from shest.celltiles import HOPTIMUS_MEAN, HOPTIMUS_STD, TileGeometry, build_quadruple_tiles, select_cells
from shest.celltiles.quadruple import (
    hematoxylin_panes,
    normalise_tiles,
    outline_to_pane,
    rasterise_masks,
    resize_windows,
)
from shest.celltiles.windows import iter_window_batches, tile_batches

MEAN = np.array(HOPTIMUS_MEAN).reshape(3, 1, 1)
STD = np.array(HOPTIMUS_STD).reshape(3, 1, 1)


# --- reference implementation: one cell at a time, step by step --------------------------


@contextlib.contextmanager
def multithreaded_torch():
    """Run with at least two PyTorch threads, as the SHEST training code ran F.interpolate.

    On one thread PyTorch resizes three-channel images with another kernel, which
    differs in the last bit.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(max(2, previous))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def reference_tile(window_hwc: np.ndarray, ring_xy: np.ndarray, x0: int, y0: int, upper: int) -> torch.Tensor:
    """Build one quadruple tile the straightforward way, as the SHEST training code does."""
    image = torch.from_numpy(np.ascontiguousarray(window_hwc.transpose(2, 0, 1))).float()
    with multithreaded_torch():
        image = F.interpolate(image.unsqueeze(0), size=112, mode="bilinear", align_corners=False).squeeze(0)
    vertices = [(round(112 * (y - y0) / upper), round(112 * (x - x0) / upper)) for x, y in ring_xy]
    mask = torch.from_numpy(polygon2mask((112, 112), vertices)).unsqueeze(0).float()
    masked = image * mask
    as_uint8 = image.numpy().transpose(1, 2, 0).astype(np.uint8)
    hed = rgb2hed(as_uint8)
    null = np.zeros_like(as_uint8[:, :, 0])
    hematoxylin = hed2rgb(np.stack((hed[:, :, 0], null, null), axis=-1))
    hematoxylin = torch.from_numpy((hematoxylin * 255).astype(np.uint8)).permute(2, 0, 1).float()
    tile = torch.cat(
        [torch.cat([image, masked], dim=2), torch.cat([hematoxylin, hematoxylin * mask], dim=2)], dim=1
    ).unsqueeze(0)
    tile.div_(255.0)
    tile.sub_(torch.tensor(HOPTIMUS_MEAN).view(1, 3, 1, 1)).div_(torch.tensor(HOPTIMUS_STD).view(1, 3, 1, 1))
    return tile[0]


class ArraySlide:
    """A slide held in memory that counts its reads."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.reads: list[tuple[int, int, int, int]] = []

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.image.shape[1], self.image.shape[0]

    def read_region(self, location, level, size):
        assert level == 0
        x, y = location
        w, h = size
        self.reads.append((x, y, w, h))
        return self.image[y : y + h, x : x + w].copy()


def square(cx: float, cy: float, half: float) -> shapely.Polygon:
    return shapely.box(cx - half, cy - half, cx + half, cy + half)


# --- geometry and filters ------------------------------------------------------------------


def test_geometry_at_half_micron():
    geometry = TileGeometry(mpp=0.5)
    assert (geometry.upper, geometry.half, geometry.window_px) == (32, 16, 32)
    assert (geometry.min_nucleus_px, geometry.max_nucleus_px) == (4, 32)


def test_geometry_odd_window_cuts_one_pixel_less():
    geometry = TileGeometry(mpp=0.2125)
    assert geometry.upper == 75
    assert geometry.window_px == 74
    assert (geometry.min_nucleus_px, geometry.max_nucleus_px) == (10, 76)


def test_geometry_ceil_ignores_float_noise():
    # 2 / 0.2 evaluates to 10.000000000000002 in floating point.
    assert TileGeometry(mpp=0.2).min_nucleus_px == 10


def test_geometry_bounds_are_parameters():
    geometry = TileGeometry(mpp=0.5, min_nucleus_um=3.0, max_nucleus_um=10.0)
    assert (geometry.min_nucleus_px, geometry.max_nucleus_px) == (6, 20)


def test_geometry_rejects_inverted_bounds():
    with pytest.raises(ValueError, match="min < max"):
        TileGeometry(mpp=0.5, min_nucleus_um=10.0, max_nucleus_um=5.0)


def test_select_cells_skips_windows_crossing_edges():
    geometry = TileGeometry(mpp=0.5)  # half = 16 px
    x = np.array([16.0, 15.4, 84.0, 84.6, 50.0, 50.0, 50.0, 50.0])
    y = np.array([40.0, 40.0, 40.0, 40.0, 16.0, 15.2, 64.0, 64.7])
    sizes = np.full(x.size, 10.0)
    selection = select_cells(x, y, sizes, (100, 80), geometry)
    assert selection.keep.tolist() == [0, 2, 4, 6]
    assert selection.n_at_edge == 4


def test_select_cells_rounds_halves_to_even():
    geometry = TileGeometry(mpp=0.5)
    # 15.5 rounds to 16 (window starts at 0); 16.5 also rounds to 16.
    selection = select_cells(
        np.array([15.5, 16.5]), np.array([40.0, 40.0]), np.array([10.0, 10.0]), (100, 80), geometry
    )
    assert selection.cx.tolist() == [16, 16]


def test_select_cells_size_filter_bounds_inclusive():
    geometry = TileGeometry(mpp=0.5)  # 4 to 32 px
    sizes = np.array([3.0, 4.0, 32.0, 33.0])
    selection = select_cells(np.full(4, 50.0), np.full(4, 40.0), sizes, (100, 80), geometry)
    assert selection.keep.tolist() == [1, 2]
    assert (selection.n_too_small, selection.n_too_large) == (1, 1)


# --- panes against hand-computed values ----------------------------------------------------


def test_outline_to_pane_rounding():
    # upper 32: a 1 px step is 3.5 pane px, so 1 px -> 3.5 -> 4 and 3 px -> 10.5 -> 10.
    ring = np.array([[101.0, 201.0], [103.0, 203.0], [116.0, 208.0]])
    vertices = outline_to_pane(ring, x0=100, y0=200, upper=32)
    assert vertices.tolist() == [[4, 4], [10, 10], [28, 56]]


def test_mask_fills_square_with_its_boundary():
    masks = rasterise_masks([np.array([[2, 1], [2, 5], [6, 5], [6, 1]])], pane_px=8)
    expected = np.zeros((8, 8), dtype=bool)
    expected[2:7, 1:6] = True
    assert np.array_equal(masks[0], expected)


def test_mask_matches_polygon2mask_when_clipped():
    vertices = [np.array([[-5, 100], [50, 130], [120, 90], [60, 40]]), np.array([[10, 10], [10, 30], [40, 20]])]
    masks = rasterise_masks(vertices)
    for mask, rc in zip(masks, vertices):
        assert np.array_equal(mask, polygon2mask((112, 112), rc))


def random_polygons(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Return integer (row, column) polygons of every kind a pane gets: star-shaped, self-crossing, clipped, repeated vertices."""
    polygons = []
    for index in range(count):
        kind = index % 4
        n = int(rng.integers(1, 30))
        if kind == 0:  # star-shaped around a random centre, partly off the pane
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radius = rng.uniform(0, 70, n)
            centre = rng.uniform(-20, 130, 2)
            rc = np.rint(centre + np.column_stack([radius * np.sin(angles), radius * np.cos(angles)]))
        elif kind == 1:  # random vertices, usually self-crossing
            rc = rng.integers(-30, 140, (n, 2))
        elif kind == 2:  # coarse grid: many horizontal and vertical edges and shared rows
            rc = rng.integers(0, 10, (n, 2)) * 12 - 5
        else:  # closed ring with repeated vertices
            rc = rng.integers(0, 112, (n, 2))
            rc = np.vstack([rc, rc[:1], rc[-1:]])
        polygons.append(np.asarray(rc, dtype=np.int64))
    return polygons


def test_mask_matches_polygon2mask_on_random_polygons():
    polygons = random_polygons(np.random.default_rng(11), 400)
    masks = rasterise_masks(polygons)
    differing = [i for i, rc in enumerate(polygons) if not np.array_equal(masks[i], polygon2mask((112, 112), rc))]
    assert differing == []


def test_mask_of_empty_batch():
    assert rasterise_masks([]).shape == (0, 112, 112)


def test_resize_does_not_depend_on_thread_count():
    windows = np.random.default_rng(4).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = resize_windows(windows)
        torch.set_num_threads(2)
        multiple = resize_windows(windows)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(single, multiple)


def test_resize_is_bilinear_half_pixel_upsampling():
    window = np.zeros((2, 2, 3), dtype=np.uint8)
    window[:, 1, :] = 100
    resized = resize_windows(window[None], pane_px=4)
    assert resized[0, 0, 0].tolist() == [0.0, 25.0, 75.0, 100.0]


def test_resize_downsampling_has_no_antialiasing():
    window = np.zeros((4, 4, 3), dtype=np.uint8)
    window[:, :, :] = np.array([0, 40, 80, 120], dtype=np.uint8)[None, :, None]
    resized = resize_windows(window[None], pane_px=2)
    # Plain bilinear averages the two nearest pixels; an antialiasing filter would give 28.6 and 91.4.
    assert resized[0, 0, 0].tolist() == [20.0, 100.0]


def hand_hematoxylin(rgb: tuple[int, int, int]) -> np.ndarray:
    """Hematoxylin-only colour of one pixel by the Ruifrok-Johnston colour deconvolution."""
    od = np.log(np.maximum(np.array(rgb, dtype=np.float64) / 255.0, 1e-6)) / np.log(1e-6)
    stains = np.maximum(od @ hed_from_rgb, 0)
    stains[1:] = 0
    back = np.exp(-(stains * -np.log(1e-6)) @ rgb_from_hed)
    return (np.clip(back, 0, 1) * 255).astype(np.uint8)


def test_hematoxylin_pane_of_uniform_colour():
    window = np.empty((32, 32, 3), dtype=np.uint8)
    window[:] = (200, 100, 150)
    pane = hematoxylin_panes(resize_windows(window[None]))
    expected = hand_hematoxylin((200, 100, 150))
    assert np.array_equal(pane[0, :, 50, 50].numpy(), expected.astype(np.float32))


def test_hematoxylin_matches_skimage_on_many_colours():
    rng = np.random.default_rng(9)
    windows = rng.integers(0, 256, (4, 112, 112, 3), dtype=np.uint8)
    windows[0] = np.arange(112 * 112 * 3).reshape(112, 112, 3) % 256  # every channel value
    pane = hematoxylin_panes(torch.from_numpy(windows).permute(0, 3, 1, 2).float())
    for index, window in enumerate(windows):
        hed = rgb2hed(window)
        hed[..., 1:] = 0
        expected = (hed2rgb(hed) * 255).astype(np.uint8).transpose(2, 0, 1)
        assert np.array_equal(pane[index].numpy(), expected.astype(np.float32)), f"window {index} differs"


def test_hematoxylin_of_white_is_white():
    window = np.full((1, 8, 8, 3), 255, dtype=np.uint8)
    pane = hematoxylin_panes(resize_windows(window, pane_px=8))
    assert pane.min().item() == 255.0


def test_quadruple_layout_and_normalisation():
    colour = (200, 100, 150)
    window = np.empty((32, 32, 3), dtype=np.uint8)
    window[:] = colour
    # Nucleus square from (8, 8) to (16, 16) window px: pane rows and columns 28-56.
    ring = np.array([[108.0, 208.0], [116.0, 208.0], [116.0, 216.0], [108.0, 216.0], [108.0, 208.0]])
    vertices = outline_to_pane(ring, x0=100, y0=200, upper=32)
    tile = build_quadruple_tiles(window[None], [vertices], normalise=False)[0].numpy()
    rgb = np.array(colour, dtype=np.float32)
    hema = hand_hematoxylin(colour).astype(np.float32)
    assert tile.shape == (3, 224, 224)
    assert np.array_equal(tile[:, 5, 5], rgb)  # top-left: RGB
    assert np.array_equal(tile[:, 40, 112 + 40], rgb)  # top-right inside the nucleus
    assert np.array_equal(tile[:, 5, 112 + 5], np.zeros(3))  # top-right outside
    assert np.array_equal(tile[:, 112 + 5, 5], hema)  # bottom-left: hematoxylin
    assert np.array_equal(tile[:, 112 + 40, 112 + 40], hema)  # bottom-right inside
    assert np.array_equal(tile[:, 112 + 60, 112 + 60], np.zeros(3))  # bottom-right outside
    inside = tile[0, 112 + 28 : 112 + 57, 112 + 28 : 112 + 57]
    assert np.all(inside == hema[0])


def test_normalisation_uses_hoptimus_statistics():
    tiles = torch.zeros((1, 3, 2, 2))
    tiles[:, :, 0, 0] = 255.0
    normalise_tiles(tiles)
    expected_zero = (-MEAN / STD).ravel()
    expected_full = ((1 - MEAN) / STD).ravel()
    assert np.allclose(tiles[0, :, 1, 1].numpy(), expected_zero, atol=1e-6)
    assert np.allclose(tiles[0, :, 0, 0].numpy(), expected_full, atol=1e-6)


# --- batched construction against the reference --------------------------------------------


def test_batched_tiles_equal_reference_on_real_windows(cmu_slide):
    from shest.slide import open_slide

    rng = np.random.default_rng(3)
    with open_slide(cmu_slide) as slide:
        geometry = TileGeometry(mpp=slide.mpp)
        upper, half = geometry.upper, geometry.half
        centres = np.column_stack([rng.uniform(600, 1600, 12), rng.uniform(600, 2400, 12)])
        windows, rings, corners = [], [], []
        for cx, cy in np.rint(centres).astype(int):
            x0, y0 = cx - half, cy - half
            windows.append(slide.read_region((x0, y0), 0, (geometry.window_px, geometry.window_px)))
            angles = np.linspace(0, 2 * np.pi, 13)[:-1]
            radius = rng.uniform(3, 9)
            ring = np.column_stack([cx + radius * np.cos(angles) + 0.5, cy + 0.7 * radius * np.sin(angles) + 0.5])
            rings.append(np.vstack([ring, ring[:1]]))
            corners.append((x0, y0))
    batched = build_quadruple_tiles(
        np.stack(windows), [outline_to_pane(r, x0, y0, upper) for r, (x0, y0) in zip(rings, corners)]
    )
    for index in range(len(windows)):
        expected = reference_tile(windows[index], rings[index], *corners[index], upper)
        assert torch.equal(batched[index], expected), f"tile {index} differs from the reference"


def test_batched_tiles_equal_reference_for_odd_window():
    rng = np.random.default_rng(5)
    geometry = TileGeometry(mpp=0.2125)  # upper 75, window 74
    windows = rng.integers(0, 256, (3, geometry.window_px, geometry.window_px, 3), dtype=np.uint8)
    rings = [np.array([[30.2, 31.7], [45.9, 33.1], [40.4, 50.6], [28.8, 44.0], [30.2, 31.7]]) + k for k in range(3)]
    batched = build_quadruple_tiles(windows, [outline_to_pane(r, 0, 0, geometry.upper) for r in rings])
    for index in range(3):
        assert torch.equal(batched[index], reference_tile(windows[index], rings[index], 0, 0, geometry.upper))


# --- reading windows in blocks -------------------------------------------------------------


def grid_cells(n_side: int, spacing: float, offset: float):
    xs, ys = np.meshgrid(np.arange(n_side) * spacing + offset, np.arange(n_side) * spacing + offset)
    x, y = xs.ravel(), ys.ravel()
    return x, y, np.array([square(a, b, 4.0) for a, b in zip(x, y)], dtype=object)


def test_windows_match_direct_cuts():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (600, 700, 3), dtype=np.uint8)
    slide = ArraySlide(image)
    geometry = TileGeometry(mpp=0.5)
    x, y, polygons = grid_cells(12, 40.0, 30.0)
    cx, cy = np.rint(x).astype(int), np.rint(y).astype(int)
    seen = np.zeros(x.size, dtype=int)
    for batch in iter_window_batches(slide, cx, cy, polygons, geometry, batch_size=25, block_px=160):
        assert len(batch) <= 25
        for position, window in zip(batch.positions, batch.windows):
            x0, y0 = cx[position] - 16, cy[position] - 16
            assert np.array_equal(window, image[y0 : y0 + 32, x0 : x0 + 32])
            seen[position] += 1
    assert np.all(seen == 1)


def test_neighbouring_cells_share_reads():
    image = np.zeros((600, 700, 3), dtype=np.uint8)
    slide = ArraySlide(image)
    geometry = TileGeometry(mpp=0.5)
    x, y, polygons = grid_cells(12, 40.0, 30.0)
    batches = list(
        iter_window_batches(slide, np.rint(x).astype(int), np.rint(y).astype(int), polygons, geometry, 64, 160)
    )
    assert sum(len(b) for b in batches) == 144
    # 12 x 12 cells at 40 px spacing fall in 3 x 3 blocks of 160 px: one read per block.
    assert len(slide.reads) == 9


def test_window_outlines_are_in_pane_coordinates():
    slide = ArraySlide(np.zeros((200, 200, 3), dtype=np.uint8))
    geometry = TileGeometry(mpp=0.5)
    polygons = np.array([shapely.box(96.0, 96.0, 104.0, 104.0)], dtype=object)
    batch = next(iter_window_batches(slide, np.array([100]), np.array([100]), polygons, geometry, 4))
    # The box spans window px 12-20 of 32: pane px 42-70.
    rows, cols = batch.pane_vertices[0][:, 0], batch.pane_vertices[0][:, 1]
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (42, 70, 42, 70)


def test_multipolygon_uses_largest_part():
    slide = ArraySlide(np.zeros((200, 200, 3), dtype=np.uint8))
    geometry = TileGeometry(mpp=0.5)
    multi = shapely.MultiPolygon([shapely.box(99.0, 99.0, 100.0, 100.0), shapely.box(92.0, 92.0, 108.0, 108.0)])
    batch = next(
        iter_window_batches(slide, np.array([100]), np.array([100]), np.array([multi], dtype=object), geometry, 4)
    )
    assert batch.pane_vertices[0][:, 0].min() == 28


def test_tile_batches_cover_every_cell_once():
    rng = np.random.default_rng(1)
    slide = ArraySlide(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8))
    geometry = TileGeometry(mpp=0.5)
    x, y, polygons = grid_cells(8, 40.0, 40.0)
    positions = []
    for batch_positions, tiles in tile_batches(
        slide, np.rint(x).astype(int), np.rint(y).astype(int), polygons, geometry, 10
    ):
        assert tiles.shape[1:] == (3, 224, 224)
        positions.extend(batch_positions.tolist())
    assert sorted(positions) == list(range(64))
