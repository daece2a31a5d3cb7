"""Tissue detection: thresholds, ink, morphology, regions of interest, polygons and GeoJSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from shapely.geometry import Point

from shest.errors import InputError
from shest.slide import open_slide
from shest.tissue import (
    Thumbnail,
    TissueParams,
    choose_thumbnail_downsample,
    detect_tissue,
    load_roi,
    mask_polygons,
    rasterize_roi,
    read_thumbnail,
    save_mask_png,
    write_tissue_geojson,
)
from shest.tissue.detect import fill_small_holes, remove_small_objects

# Synthetic thumbnails: 8 µm/px (a 0.5 µm/px slide at downsample 16), so one pixel is 64 µm².
SLIDE_MPP = 0.5
DOWNSAMPLE = 16.0
PIXEL_MM2 = (SLIDE_MPP * DOWNSAMPLE) ** 2 / 1e6
DARK_TISSUE = (150, 70, 160)
PALE_TISSUE = (240, 192, 220)  # saturation 0.2: eosin-only stroma
GREEN_INK = (40, 160, 90)
BLUE_INK = (20, 90, 200)
BLACK_INK = (20, 20, 25)


def glass(height: int = 300, width: int = 300, seed: int = 0) -> np.ndarray:
    """Near-white background with a little scanner noise."""
    rng = np.random.default_rng(seed)
    return (246 + rng.integers(-3, 4, (height, width, 3))).astype(np.uint8)


def he_texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Pink stroma with purple nuclei-like dots, as a thumbnail shows tissue."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), dtype=np.int16)
    image[:] = (215, 130, 185)
    nuclei = rng.random((height, width)) < 0.3
    image[nuclei] = (130, 70, 160)
    image += rng.integers(-12, 13, image.shape).astype(np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)


def thumbnail_of(image: np.ndarray) -> Thumbnail:
    return Thumbnail(image, DOWNSAMPLE, DOWNSAMPLE, SLIDE_MPP, SLIDE_MPP)


def disc(shape, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


# --- thumbnails ----------------------------------------------------------------------


def test_downsample_targets_thumbnail_mpp():
    assert choose_thumbnail_downsample((40_000, 40_000), 0.25, thumbnail_mpp=8.0) == pytest.approx(32.0)


def test_downsample_keeps_small_images_readable():
    assert choose_thumbnail_downsample((2048, 1000), 0.25, thumbnail_mpp=8.0, min_side=1024) == pytest.approx(2.0)


def test_downsample_caps_large_slides():
    downsample = choose_thumbnail_downsample((400_000, 100_000), 0.25, thumbnail_mpp=8.0, max_side=8192)
    assert 400_000 / downsample == pytest.approx(8192)


def test_downsample_never_below_one():
    assert choose_thumbnail_downsample((500, 300), 0.25, min_side=1024) == 1.0


def test_thumbnail_pixel_area():
    thumb = thumbnail_of(glass(10, 10))
    assert thumb.pixel_area_mm2 == pytest.approx(PIXEL_MM2)
    assert thumb.mpp == pytest.approx(8.0)


# --- detection on synthetic thumbnails -----------------------------------------------


def test_disc_area_in_mm2():
    image = glass()
    inside = disc(image.shape[:2], (150, 150), 100)
    image[inside] = he_texture(300, 300)[inside]
    tissue = detect_tissue(thumbnail_of(image))
    expected = math.pi * 100**2 * PIXEL_MM2
    assert tissue.area_mm2 == pytest.approx(expected, rel=0.03)


def test_disc_mask_matches_drawn_disc():
    image = glass()
    inside = disc(image.shape[:2], (150, 150), 100)
    image[inside] = he_texture(300, 300)[inside]
    tissue = detect_tissue(thumbnail_of(image))
    agreement = (tissue.mask == inside).mean()
    assert agreement > 0.99


def test_blank_slide_has_no_tissue():
    tissue = detect_tissue(thumbnail_of(glass()))
    assert tissue.is_empty
    assert tissue.area_mm2 == 0.0


def test_white_slide_has_no_tissue():
    tissue = detect_tissue(thumbnail_of(np.full((200, 200, 3), 255, dtype=np.uint8)))
    assert tissue.is_empty
    assert tissue.otsu_threshold is None


def test_image_of_only_tissue_is_all_tissue():
    tissue = detect_tissue(thumbnail_of(he_texture(200, 300)))
    assert tissue.fraction > 0.99


def test_pale_tissue_kept_beside_dark_tissue():
    image = glass()
    image[50:250, 30:140] = DARK_TISSUE
    image[50:250, 160:270] = PALE_TISSUE
    tissue = detect_tissue(thumbnail_of(image))
    assert tissue.otsu_threshold > tissue.params.saturation_ceiling
    assert tissue.mask[50:250, 160:270].mean() > 0.99


def test_grey_debris_is_not_tissue():
    image = glass()
    image[100:200, 100:200] = (150, 150, 150)
    tissue = detect_tissue(thumbnail_of(image))
    assert tissue.is_empty


@pytest.mark.parametrize("colour", [GREEN_INK, BLUE_INK, BLACK_INK], ids=["green", "blue", "black"])
def test_ink_stroke_detected_and_excluded(colour):
    image = glass()
    image[40:260, 40:260] = he_texture(220, 220)
    image[140:152, 20:280] = colour
    tissue = detect_tissue(thumbnail_of(image))
    stroke = np.zeros(image.shape[:2], dtype=bool)
    stroke[140:152, 20:280] = True
    assert tissue.ink[stroke].mean() > 0.95
    assert not tissue.mask[stroke].any()


def test_tissue_is_not_ink():
    image = glass()
    image[40:260, 40:260] = he_texture(220, 220)
    tissue = detect_tissue(thumbnail_of(image))
    assert not tissue.ink.any()


def test_small_debris_removed_and_fragment_kept():
    image = glass()
    image[20:23, 20:23] = DARK_TISSUE  # 9 px = 0.0006 mm²
    image[100:120, 100:120] = DARK_TISSUE  # 400 px = 0.026 mm²
    tissue = detect_tissue(thumbnail_of(image), TissueParams(min_tissue_area_mm2=0.004))
    assert not tissue.mask[20:23, 20:23].any()
    assert tissue.mask[100:120, 100:120].all()


def test_small_hole_filled_large_hole_kept():
    image = glass()
    image[20:280, 20:280] = DARK_TISSUE
    image[60:65, 60:65] = 246  # 25 px = 0.0016 mm²
    image[150:210, 150:210] = 246  # 3600 px = 0.23 mm²
    tissue = detect_tissue(thumbnail_of(image), TissueParams(max_hole_area_mm2=0.05))
    assert tissue.mask[60:65, 60:65].all()
    assert not tissue.mask[160:200, 160:200].any()


def test_roi_mask_restricts_tissue():
    image = he_texture(200, 300)
    roi = np.zeros((200, 300), dtype=bool)
    roi[:, :150] = True
    tissue = detect_tissue(thumbnail_of(image), roi_mask=roi)
    assert tissue.roi_applied
    assert not tissue.mask[:, 150:].any()
    assert tissue.mask[:, :150].mean() > 0.99


def test_roi_mask_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        detect_tissue(thumbnail_of(glass(50, 50)), roi_mask=np.ones((10, 10), dtype=bool))


def test_invalid_saturation_thresholds_raise():
    with pytest.raises(ValueError, match="floor <= ceiling"):
        TissueParams(saturation_floor=0.3, saturation_ceiling=0.1)


# --- morphology helpers --------------------------------------------------------------


def test_fill_small_holes_ignores_border_background():
    mask = np.zeros((10, 10), dtype=bool)
    mask[:, 3:] = True
    mask[5, 6] = False
    filled = fill_small_holes(mask, 5)
    assert filled[5, 6]
    assert not filled[:, :3].any()


def test_remove_small_objects_threshold_is_inclusive():
    mask = np.zeros((10, 10), dtype=bool)
    mask[0:2, 0:2] = True
    mask[5:8, 5:8] = True
    cleaned = remove_small_objects(mask, 9)
    assert not cleaned[0:2, 0:2].any()
    assert cleaned[5:8, 5:8].all()


# --- regions of interest -------------------------------------------------------------

SQUARE = {"type": "Polygon", "coordinates": [[[0, 0], [1600, 0], [1600, 1600], [0, 1600], [0, 0]]]}


@pytest.mark.parametrize(
    "document",
    [
        {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": SQUARE, "properties": {}}]},
        {"type": "Feature", "geometry": SQUARE, "properties": {"objectType": "annotation"}},
        [{"type": "Feature", "geometry": SQUARE, "properties": {}}],
        SQUARE,
    ],
    ids=["collection", "feature", "list", "geometry"],
)
def test_load_roi_shapes(tmp_path, document):
    path = tmp_path / "roi.geojson"
    path.write_text(json.dumps(document))
    roi = load_roi(path)
    assert roi.area == pytest.approx(1600 * 1600)


def test_load_roi_ignores_points(tmp_path):
    point = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {}}
    square = {"type": "Feature", "geometry": SQUARE, "properties": {}}
    path = tmp_path / "roi.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [point, square]}))
    assert load_roi(path).area == pytest.approx(1600 * 1600)


def test_load_roi_keeps_both_lobes_of_bow_tie(tmp_path):
    # The outline crosses itself at (1350, 1500): two triangles of 225,000 px² each.
    bow_tie = {"type": "Polygon", "coordinates": [[[900, 1000], [1800, 2000], [1800, 1000], [900, 2000], [900, 1000]]]}
    path = tmp_path / "roi.geojson"
    path.write_text(json.dumps(bow_tie))
    roi = load_roi(path)
    assert roi.is_valid
    assert roi.area == pytest.approx(2 * 225_000)
    assert roi.contains(Point(1000, 1500))
    assert roi.contains(Point(1700, 1500))


def test_load_roi_reads_gzipped_geojson(tmp_path):
    import gzip

    path = tmp_path / "roi.geojson.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        json.dump(SQUARE, handle)
    assert load_roi(path).area == pytest.approx(1600 * 1600)


def test_load_roi_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_roi(tmp_path / "absent.geojson")


def test_load_roi_invalid_json(tmp_path):
    path = tmp_path / "roi.geojson"
    path.write_text("{oops")
    with pytest.raises(InputError, match="not valid GeoJSON"):
        load_roi(path)


def test_load_roi_without_polygons(tmp_path):
    path = tmp_path / "roi.geojson"
    path.write_text(json.dumps({"type": "Point", "coordinates": [1, 2]}))
    with pytest.raises(InputError, match="no polygon"):
        load_roi(path)


def test_rasterize_roi_uses_pixel_centres():
    from shapely.geometry import box

    mask = rasterize_roi(box(0, 0, 160, 80), (20, 30), 16.0, 16.0)
    assert mask.sum() == 10 * 5
    assert mask[:5, :10].all()


def test_rasterize_roi_respects_holes():
    from shapely.geometry import Polygon

    outer = [(0, 0), (320, 0), (320, 320), (0, 320)]
    hole = [(80, 80), (240, 80), (240, 240), (80, 240)]
    mask = rasterize_roi(Polygon(outer, [hole]), (20, 20), 16.0, 16.0)
    assert mask[2, 2]
    assert not mask[10, 10]


# --- polygons and GeoJSON ------------------------------------------------------------


def test_square_polygon_in_level0_pixels():
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:10, 4:12] = True  # level-0 x 40-120, y 50-100 at downsample 10
    polygons = mask_polygons(mask, 10.0, 10.0)
    assert len(polygons) == 1
    assert polygons[0].bounds == pytest.approx((40.0, 50.0, 120.0, 100.0))


def test_polygon_keeps_hole():
    mask = disc((60, 60), (30, 30), 25) & ~disc((60, 60), (30, 30), 10)
    polygons = mask_polygons(mask, 4.0, 4.0)
    assert len(polygons) == 1
    assert len(polygons[0].interiors) == 1
    assert polygons[0].is_valid


def test_polygon_area_close_to_mask_area():
    mask = disc((100, 100), (50, 50), 40)
    polygons = mask_polygons(mask, 2.0, 3.0)
    assert polygons[0].area == pytest.approx(mask.sum() * 6.0, rel=0.02)


def test_polygons_ordered_top_to_bottom():
    mask = np.zeros((40, 40), dtype=bool)
    mask[25:35, 2:10] = True
    mask[2:10, 25:35] = True
    polygons = mask_polygons(mask, 1.0, 1.0)
    assert polygons[0].bounds[1] < polygons[1].bounds[1]


def test_empty_mask_has_no_polygons():
    assert mask_polygons(np.zeros((10, 10), dtype=bool), 1.0, 1.0) == []


def test_geojson_read_by_geopandas(tmp_path):
    import geopandas

    mask = np.zeros((40, 40), dtype=bool)
    mask[5:15, 5:15] = True
    mask[20:35, 20:35] = True
    path = tmp_path / "s.tissue.geojson"
    count = write_tissue_geojson(path, mask_polygons(mask, 8.0, 8.0), 0.5, 0.5, {"sample": "s"})
    frame = geopandas.read_file(path)
    assert count == 2
    assert len(frame) == 2
    assert set(frame.geom_type) == {"Polygon"}
    assert set(frame["objectType"]) == {"annotation"}


def test_geojson_features_are_qupath_annotations(tmp_path):
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:15, 5:15] = True
    path = tmp_path / "s.tissue.geojson"
    write_tissue_geojson(path, mask_polygons(mask, 8.0, 8.0), 0.5, 0.5)
    data = json.loads(path.read_text())
    feature = data["features"][0]
    assert data["type"] == "FeatureCollection"
    assert feature["properties"]["objectType"] == "annotation"
    assert feature["properties"]["classification"]["name"] == "Tissue"
    assert feature["properties"]["measurements"]["Area mm^2"] > 0


def test_mask_png_round_trip(tmp_path):
    from PIL import Image

    mask = disc((30, 40), (15, 20), 10)
    path = tmp_path / "mask.png"
    save_mask_png(path, mask)
    loaded = np.asarray(Image.open(path)) > 127
    assert np.array_equal(loaded, mask)


# --- real slides ---------------------------------------------------------------------


def test_tma_core_is_round_tissue(ome_tile):
    with open_slide(ome_tile) as slide:
        thumb = read_thumbnail(slide, thumbnail_mpp=8.0, min_side=256)
    tissue = detect_tissue(thumb)
    h, w = tissue.mask.shape
    assert tissue.mask[h // 2, w // 2]
    assert not tissue.mask[0, 0]
    assert not tissue.mask[-1, -1]
    # The core is about 0.65 mm across: 0.25-0.45 mm².
    assert 0.25 < tissue.area_mm2 < 0.45


def test_cmu_tissue_fraction_plausible(cmu_slide):
    with open_slide(cmu_slide) as slide:
        thumb = read_thumbnail(slide, thumbnail_mpp=8.0, min_side=256)
    tissue = detect_tissue(thumb)
    assert 0.2 < tissue.fraction < 0.6
    assert not tissue.mask[:10, :10].any()


def test_cmu_polygons_cover_mask_area(cmu_slide):
    with open_slide(cmu_slide) as slide:
        thumb = read_thumbnail(slide, thumbnail_mpp=8.0, min_side=256)
    tissue = detect_tissue(thumb)
    polygons = mask_polygons(tissue.mask, thumb.downsample_x, thumb.downsample_y)
    area_mm2 = sum(p.area for p in polygons) * 0.499**2 / 1e6
    assert area_mm2 == pytest.approx(tissue.area_mm2, rel=0.1)
