"""Tile plans: core regions that partition the slide, tissue filtering, chunks and persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shapely.geometry import Polygon, box

from shest.errors import InputError
from shest.tiling import TilePlan, make_tile_plan

MPP = 0.5
# 100 µm tiles with 10 µm overlap at 0.5 µm/px: 200 px tiles, 20 px overlap, 180 px cores.
TILE_UM, OVERLAP_UM = 100.0, 10.0


def full_plan(width: int = 1000, height: int = 730, chunks: int = 1) -> TilePlan:
    mask = np.ones((height // 10, width // 10), dtype=bool)
    plan = make_tile_plan(mask, 10.0, (width, height), MPP, "slide.tif", tile_size_um=TILE_UM, overlap_um=OVERLAP_UM)
    return plan.split(chunks)


def owners(plan: TilePlan, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Number of tiles whose core contains each point."""
    return np.sum([tile.owns(x, y) for tile in plan.tiles], axis=0)


# --- core regions --------------------------------------------------------------------


def test_plan_sizes_in_pixels():
    plan = full_plan()
    assert plan.tile_size_px == 200
    assert plan.overlap_px == 20


def test_every_pixel_in_exactly_one_core():
    plan = full_plan()
    yy, xx = np.mgrid[0 : plan.slide_height, 0 : plan.slide_width]
    counts = owners(plan, xx.ravel(), yy.ravel())
    assert counts.min() == 1
    assert counts.max() == 1


def test_fractional_points_owned_once():
    plan = full_plan()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, plan.slide_width, 5000)
    y = rng.uniform(0, plan.slide_height, 5000)
    # Points exactly on core seams as well.
    x = np.concatenate([x, np.full(4, 180.0), [0.0, 999.999]])
    y = np.concatenate([y, [0.0, 179.999, 180.0, 729.5], [0.0, 729.999]])
    counts = owners(plan, x, y)
    assert (counts == 1).all()


def test_core_areas_sum_to_slide_area():
    plan = full_plan()
    area = sum((t.core_x1 - t.core_x0) * (t.core_y1 - t.core_y0) for t in plan.tiles)
    assert area == plan.slide_width * plan.slide_height


def test_owner_of_matches_owning_tile():
    plan = full_plan()
    rng = np.random.default_rng(1)
    x = rng.uniform(0, plan.slide_width, 200)
    y = rng.uniform(0, plan.slide_height, 200)
    cells = plan.owner_of(x, y)
    by_cell = {(t.row, t.col): t for t in plan.tiles}
    for (row, col), px, py in zip(cells, x, y):
        assert by_cell[(int(row), int(col))].owns(px, py)


def test_tile_box_is_core_plus_margin_clipped():
    plan = full_plan()
    margin = plan.overlap_px // 2
    for tile in plan.tiles:
        assert tile.x == max(tile.core_x0 - margin, 0)
        assert tile.y == max(tile.core_y0 - margin, 0)
        assert tile.x + tile.width == min(tile.core_x1 + margin, plan.slide_width)
        assert tile.y + tile.height == min(tile.core_y1 + margin, plan.slide_height)


def test_tiles_stay_inside_slide():
    plan = full_plan()
    assert min(t.x for t in plan.tiles) >= 0
    assert max(t.x + t.width for t in plan.tiles) <= plan.slide_width
    assert max(t.y + t.height for t in plan.tiles) <= plan.slide_height
    assert max(max(t.width, t.height) for t in plan.tiles) <= plan.tile_size_px


def test_object_near_seam_lies_inside_owner():
    # A nucleus of radius below half the overlap, centred just left of a seam.
    plan = full_plan()
    radius = plan.overlap_px / 2 - 1
    cx, cy = 179.5, 300.0
    owner = [t for t in plan.tiles if t.owns(cx, cy)][0]
    assert owner.x <= cx - radius
    assert cx + radius <= owner.x + owner.width


# --- tissue filtering ----------------------------------------------------------------


def test_only_tissue_cores_get_tiles():
    mask = np.zeros((73, 100), dtype=bool)
    mask[0:10, 0:10] = True  # level-0 box (0, 0)-(100, 100): inside core (0, 0)
    plan = make_tile_plan(mask, 10.0, (1000, 730), MPP, "s", tile_size_um=TILE_UM, overlap_um=OVERLAP_UM)
    assert [(t.row, t.col) for t in plan.tiles] == [(0, 0)]


def test_tile_tissue_fraction_from_mask():
    mask = np.zeros((73, 100), dtype=bool)
    mask[0:9, 0:9] = True  # 90 x 90 level-0 px of the 180 x 180 core
    plan = make_tile_plan(mask, 10.0, (1000, 730), MPP, "s", tile_size_um=TILE_UM, overlap_um=OVERLAP_UM)
    assert plan.tiles[0].tissue_fraction == pytest.approx(0.25)


def test_min_tissue_fraction_drops_sparse_tiles():
    mask = np.zeros((73, 100), dtype=bool)
    mask[0:9, 0:9] = True
    mask[0:18, 18:36] = True  # all of core (0, 1)
    plan = make_tile_plan(
        mask, 10.0, (1000, 730), MPP, "s", tile_size_um=TILE_UM, overlap_um=OVERLAP_UM, min_tissue_fraction=0.5
    )
    assert [(t.row, t.col) for t in plan.tiles] == [(0, 1)]


def test_tile_ids_are_consecutive():
    plan = full_plan()
    assert [t.tile_id for t in plan.tiles] == list(range(len(plan.tiles)))


def test_no_tissue_gives_empty_plan_with_warning():
    mask = np.zeros((73, 100), dtype=bool)
    plan = make_tile_plan(mask, 10.0, (1000, 730), MPP, "blank.tif", tile_size_um=TILE_UM, overlap_um=OVERLAP_UM)
    assert len(plan) == 0
    assert any("No tissue" in w and "blank.tif" in w for w in plan.warnings)


# --- small slides and invalid parameters ---------------------------------------------


def test_slide_smaller_than_one_tile():
    mask = np.ones((15, 15), dtype=bool)
    plan = make_tile_plan(mask, 10.0, (150, 150), MPP, "tiny.png", tile_size_um=TILE_UM, overlap_um=OVERLAP_UM)
    assert len(plan) == 1
    assert plan.tiles[0].box == (0, 0, 150, 150)
    assert any("smaller than one" in w for w in plan.warnings)


def test_slide_below_minimum_side_raises():
    mask = np.ones((5, 5), dtype=bool)
    with pytest.raises(InputError, match="too small to segment"):
        make_tile_plan(mask, 10.0, (50, 50), MPP, "speck.png")


@pytest.mark.parametrize(
    ("tile_um", "overlap_um", "pattern"),
    [(0.0, 0.0, "positive"), (100.0, -1.0, "non-negative"), (50.0, 50.0, "smaller than the tile size"), (4.0, 0.0, "larger tile")],
)
def test_invalid_tile_parameters_raise(tile_um, overlap_um, pattern):
    mask = np.ones((73, 100), dtype=bool)
    with pytest.raises(InputError, match=pattern):
        make_tile_plan(mask, 10.0, (1000, 730), MPP, "s", tile_size_um=tile_um, overlap_um=overlap_um)


def test_target_finer_than_slide_raises():
    mask = np.ones((73, 100), dtype=bool)
    with pytest.raises(InputError, match="finer than the slide"):
        make_tile_plan(mask, 10.0, (1000, 730), MPP, "s", target_mpp=0.25)


# --- chunks --------------------------------------------------------------------------


@pytest.mark.parametrize("chunks", [1, 2, 3, 7, 24])
def test_chunks_are_balanced(chunks):
    plan = full_plan(chunks=chunks)
    sizes = [len(plan.chunk(i)) for i in range(chunks)]
    assert sum(sizes) == len(plan)
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("chunks", [2, 3, 7])
def test_chunks_are_contiguous(chunks):
    plan = full_plan(chunks=chunks)
    numbers = [t.chunk for t in plan.tiles]
    assert numbers == sorted(numbers)
    assert set(numbers) == set(range(chunks))


def test_more_chunks_than_tiles_leaves_empty_chunks():
    plan = full_plan(width=300, height=300, chunks=10)
    assert len(plan) == 4
    assert sum(1 for i in range(10) if not plan.chunk(i)) == 6


@pytest.mark.parametrize("index", [-1, 3, 100])
def test_chunk_index_outside_range_raises(index):
    plan = full_plan(chunks=3)
    with pytest.raises(InputError, match="chunks 0-2"):
        plan.chunk(index)


def test_zero_chunks_raises():
    with pytest.raises(InputError, match="at least 1"):
        full_plan().split(0)


def test_split_of_empty_plan():
    mask = np.zeros((73, 100), dtype=bool)
    plan = make_tile_plan(mask, 10.0, (1000, 730), MPP, "s").split(4)
    assert plan.chunks == 4
    assert plan.chunk(3) == []


# --- persistence ---------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    plan = full_plan(chunks=3)
    path = tmp_path / "s.tiles.json"
    plan.save(path)
    loaded = TilePlan.load(path)
    assert loaded == plan


def test_saved_plan_has_format(tmp_path):
    path = tmp_path / "s.tiles.json"
    full_plan().save(path)
    assert json.loads(path.read_text())["format"] == "shest-tile-plan/2"


def test_load_missing_plan(tmp_path):
    with pytest.raises(InputError, match="shest qc"):
        TilePlan.load(tmp_path / "absent.tiles.json")


def test_load_invalid_json(tmp_path):
    path = tmp_path / "bad.tiles.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        TilePlan.load(path)


def test_load_other_format(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="not a SHEST tile plan"):
        TilePlan.load(path)


def test_load_missing_fields(tmp_path):
    path = tmp_path / "partial.tiles.json"
    path.write_text(json.dumps({"format": "shest-tile-plan/1", "tiles": []}))
    with pytest.raises(InputError, match="missing fields"):
        TilePlan.load(path)


# --- region: tissue and ROI polygons -------------------------------------------------


def region_plan() -> TilePlan:
    mask = np.ones((73, 100), dtype=bool)
    tissue = box(0, 0, 600, 730)
    roi = Polygon([(100.123, 100.0), (900.0, 100.0), (900.0, 500.456), (100.123, 500.456)])
    return make_tile_plan(
        mask, 10.0, (1000, 730), MPP, "s", tile_size_um=TILE_UM, overlap_um=OVERLAP_UM, tissue=tissue, roi=roi
    )


def test_region_round_trip(tmp_path):
    plan = region_plan()
    path = tmp_path / "s.tiles.json"
    plan.save(path)
    loaded = TilePlan.load(path)
    assert loaded.roi.equals(plan.roi)
    assert loaded.tissue.equals(plan.tissue)
    assert loaded == plan


def test_region_is_tissue_and_roi():
    plan = region_plan()
    x = np.array([50.0, 300.0, 700.0, 300.0, 100.123])
    y = np.array([300.0, 300.0, 300.0, 600.0, 300.0])
    assert plan.in_region(x, y).tolist() == [False, True, False, False, True]


def test_plan_without_region_keeps_everything():
    plan = full_plan()
    assert not plan.has_region
    assert plan.in_region(np.array([0.0, 999.0]), np.array([0.0, 729.0])).all()


def test_version_1_plan_loads(tmp_path):
    document = full_plan(chunks=2).to_dict()
    document["format"] = "shest-tile-plan/1"
    del document["tissue"], document["roi"]
    path = tmp_path / "v1.tiles.json"
    path.write_text(json.dumps(document))
    loaded = TilePlan.load(path)
    assert loaded == full_plan(chunks=2)
    assert not loaded.has_region


def test_version_1_plan_with_roi_rejected(tmp_path):
    document = region_plan().to_dict()
    document["format"] = "shest-tile-plan/1"
    path = tmp_path / "v1.tiles.json"
    path.write_text(json.dumps(document))
    with pytest.raises(InputError, match="unknown fields"):
        TilePlan.load(path)


# --- validation of hand-edited plans ---------------------------------------------------


def edited_plan(tmp_path, edit) -> str:
    """Save a 2-chunk plan, apply ``edit`` to its JSON document and return the file path."""
    document = full_plan(chunks=2).to_dict()
    edit(document)
    path = tmp_path / "edited.tiles.json"
    path.write_text(json.dumps(document))
    return path


def set_tile(index: int, key: str, value):
    def edit(document):
        document["tiles"][index][key] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (set_tile(2, "width", -5), r"tile 2, field 'width' must be at least 1, found -5"),
        (set_tile(1, "chunk", 2), r"tile 1, field 'chunk' is 2, but the plan has 2 chunk\(s\)"),
        (set_tile(3, "x", "abc"), r"tile 3, field 'x' must be an integer, found 'abc'"),
        (set_tile(0, "tissue_fraction", 1.5), r"tile 0, field 'tissue_fraction' must lie between 0 and 1"),
        (set_tile(0, "tissue_fraction", float("nan")), r"tile 0, field 'tissue_fraction' must be a finite number"),
        (set_tile(4, "height", 5000), r"tile 4: its box .* extends beyond the 1000 x 730 px slide"),
        (set_tile(5, "core_x1", 10_000), r"tile 5: fields 'core_x0', 'core_y0', 'core_x1', 'core_y1'"),
        (set_tile(1, "col", 3), r"tile 1: fields 'core_x0'.* row 0 and col 3"),
        (set_tile(0, "x", 50), r"tile 0: its box .* does not contain its core"),
        (set_tile(1, "tile_id", 0), r"tiles 0 and 1 share field 'tile_id' 0"),
        (set_tile(0, "flag", True), r"tile 0 has unknown fields \['flag'\]"),
        (lambda d: d["tiles"][0].pop("y"), r"tile 0 has missing fields \['y'\]"),
        (lambda d: d.update(chunks=0), r"field 'chunks' must be at least 1"),
        (lambda d: d.update(slide_mpp="0.5"), r"field 'slide_mpp' must be a number"),
        (lambda d: d.update(tiles={}), r"field 'tiles' must be a list"),
        (lambda d: d.update(roi="POLYGON ((0 0, 1"), r"field 'roi' is not valid WKT"),
        (lambda d: d.update(tissue="POINT (1 2)"), r"field 'tissue' must be a POLYGON or MULTIPOLYGON"),
    ],
)
def test_edited_plan_rejected(tmp_path, edit, pattern):
    with pytest.raises(InputError, match=pattern):
        TilePlan.load(edited_plan(tmp_path, edit))


def test_duplicate_cell_rejected(tmp_path):
    def duplicate(document):
        copy = dict(document["tiles"][0], tile_id=99)
        document["tiles"].append(copy)

    with pytest.raises(InputError, match="both have row 0 and col 0"):
        TilePlan.load(edited_plan(tmp_path, duplicate))


def test_trimmed_plan_loads(tmp_path):
    # Removing tiles by hand is a legitimate edit: the remaining cores still partition their part.
    path = edited_plan(tmp_path, lambda d: d.update(tiles=d["tiles"][:3]))
    assert len(TilePlan.load(path)) == 3


@pytest.mark.parametrize(
    ("keyword", "value", "pattern"),
    [
        ("tile_size_um", float("inf"), "--tile-size-um must be a finite number"),
        ("overlap_um", float("nan"), "--overlap-um must be a finite number"),
        ("target_mpp", float("inf"), "--target-mpp must be a finite number"),
        ("target_mpp", 5.0, r"--target-mpp 5 is outside \(0, 2\]"),
        ("tile_size_um", 10_000.0, "--tile-size-um 10000 gives tiles of 20000 px"),
    ],
)
def test_out_of_bounds_plan_parameters(keyword, value, pattern):
    mask = np.ones((73, 100), dtype=bool)
    with pytest.raises(InputError, match=pattern):
        make_tile_plan(mask, 10.0, (1000, 730), MPP, "s", **{keyword: value})


def test_target_finer_than_slide_names_option():
    mask = np.ones((73, 100), dtype=bool)
    with pytest.raises(InputError, match="pass --target-mpp 1 or larger"):
        make_tile_plan(mask, 10.0, (1000, 730), 1.0, "s", target_mpp=0.5)
