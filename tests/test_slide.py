"""Slide reading: backends, level-0 coordinates, padding, thumbnails and damaged files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from shest.errors import SlideError
from shest.slide import open_slide
from shest.slide import reader as reader_module

BLOCK = 64  # side of the constant blocks of the coordinate-coded test image


def coordinate_image(width: int, height: int) -> np.ndarray:
    """RGB image whose red channel is x // BLOCK and green channel y // BLOCK (blue 100)."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([(xx // BLOCK) % 256, (yy // BLOCK) % 256, np.full_like(xx, 100)], axis=-1).astype(np.uint8)


def write_pyramid(path, image: np.ndarray, downsamples=(2, 4), subifds: bool = False) -> None:
    """Write a tiled pyramidal TIFF at 0.5 µm/px; levels as pages (OpenSlide) or SubIFDs (tiffslide)."""
    extra = {"subifds": len(downsamples)} if subifds else {}
    with tifffile.TiffWriter(path) as tif:
        tif.write(
            image, tile=(128, 128), photometric="rgb",
            resolution=(20000, 20000), resolutionunit="CENTIMETER", **extra,
        )
        for ds in downsamples:
            tif.write(image[::ds, ::ds], tile=(128, 128), photometric="rgb", subfiletype=1)


@pytest.fixture(params=["pages", "subifds"])
def pyramid(request, tmp_path):
    path = tmp_path / f"pyramid_{request.param}.tif"
    write_pyramid(path, coordinate_image(1024, 768), subifds=request.param == "subifds")
    return path, request.param


# --- real slides ---------------------------------------------------------------------


def test_cmu_opens_with_openslide(cmu_slide):
    with open_slide(cmu_slide) as slide:
        assert slide.backend == "openslide"
        assert slide.vendor == "aperio"
        assert slide.dimensions == (2220, 2967)
        assert slide.objective_power == 20.0
        assert {"label", "macro", "thumbnail"} <= set(slide.associated_images)


def test_cmu_info_is_json_serialisable(cmu_slide):
    import json

    with open_slide(cmu_slide) as slide:
        info = slide.info()
    text = json.dumps(info)
    assert json.loads(text)["width"] == 2220
    assert info["level_count"] == len(info["levels"])


def test_cmu_associated_label_is_rgb(cmu_slide):
    with open_slide(cmu_slide) as slide:
        label = slide.associated_image("label")
    assert label.ndim == 3
    assert label.shape[2] == 3


def test_unknown_associated_image_lists_names(cmu_slide):
    with open_slide(cmu_slide) as slide, pytest.raises(KeyError, match="macro"):
        slide.associated_image("overview")


def test_cmu_read_region_shape_and_dtype(cmu_slide):
    with open_slide(cmu_slide) as slide:
        region = slide.read_region((100, 200), 0, (64, 32))
    assert region.shape == (32, 64, 3)
    assert region.dtype == np.uint8


def test_read_region_at_mpp_scales_box(cmu_slide):
    with open_slide(cmu_slide) as slide:
        image, scale = slide.read_region_at_mpp((0, 0, 998, 500), 0.998)
    assert image.shape[:2] == (250, 499)
    assert scale == pytest.approx(0.5)


def test_ome_tiff_uses_tiffslide(ome_tile):
    with open_slide(ome_tile) as slide:
        assert slide.backend == "tiffslide"
        assert slide.dimensions == (1380, 1484)


def test_tcga_two_levels_with_override(tcga_no_mpp_slide):
    with open_slide(tcga_no_mpp_slide, mpp=0.25) as slide:
        assert slide.level_count == 2
        assert slide.levels[1].downsample == pytest.approx(2.0, abs=0.01)
        region = slide.read_region((2000, 1000), 1, (50, 40))
    assert region.shape == (40, 50, 3)


def test_jpeg_uses_pillow(jpeg_no_mpp):
    with open_slide(jpeg_no_mpp, mpp=0.25) as slide:
        assert slide.backend == "pillow"
        assert slide.dimensions == (500, 300)


# --- reads outside the image ---------------------------------------------------------


def test_read_outside_is_background(cmu_slide):
    with open_slide(cmu_slide) as slide:
        width, height = slide.dimensions
        region = slide.read_region((width + 10, height + 10), 0, (16, 16))
    assert (region == 255).all()


def test_read_across_edge_is_padded(cmu_slide):
    with open_slide(cmu_slide) as slide:
        inside = slide.read_region((0, 0), 0, (50, 50))
        across = slide.read_region((-50, -30), 0, (100, 80))
    assert (across[:30, :, :] == 255).all()
    assert (across[:, :50, :] == 255).all()
    assert np.array_equal(across[30:, 50:], inside)


def test_read_across_right_edge_is_padded(pyramid):
    path, _ = pyramid
    with open_slide(path) as slide:
        region = slide.read_region((1000, 0), 0, (48, 8))
    assert (region[:, 24:] == 255).all()
    assert region[0, 0, 0] == 1000 // BLOCK


def test_read_invalid_level_raises(cmu_slide):
    with open_slide(cmu_slide) as slide, pytest.raises(ValueError, match="levels 0-0"):
        slide.read_region((0, 0), 3, (10, 10))


def test_read_too_large_raises(cmu_slide, monkeypatch):
    monkeypatch.setattr(reader_module, "MAX_READ_PIXELS", 1000)
    with open_slide(cmu_slide) as slide, pytest.raises(ValueError, match="read it in tiles"):
        slide.read_region((0, 0), 0, (100, 100))


def test_read_nonpositive_size_raises(cmu_slide):
    with open_slide(cmu_slide) as slide, pytest.raises(ValueError, match="positive"):
        slide.read_region((0, 0), 0, (0, 10))


# --- pyramidal TIFF built with tifffile ----------------------------------------------


def test_pyramid_backend_and_levels(pyramid):
    path, layout = pyramid
    with open_slide(path) as slide:
        assert slide.backend == ("openslide" if layout == "pages" else "tiffslide")
        assert [level.downsample for level in slide.levels] == [1.0, 2.0, 4.0]
        assert slide.mpp == pytest.approx(0.5)


def test_level2_read_uses_level0_coordinates(pyramid):
    path, _ = pyramid
    with open_slide(path) as slide:
        region = slide.read_region((640, 384), 2, (20, 10))
    # Level-0 x of column c is 640 + 4c; block 10 spans x 640-703, i.e. columns 0-15.
    assert region[0, 0, 0] == 10
    assert region[0, 15, 0] == 10
    assert region[0, 16, 0] == 11
    assert region[0, 0, 1] == 384 // BLOCK


def test_level1_read_matches_level0(pyramid):
    path, _ = pyramid
    with open_slide(path) as slide:
        level0 = slide.read_region((256, 128), 0, (128, 128))
        level1 = slide.read_region((256, 128), 1, (64, 64))
    assert np.array_equal(level1, level0[::2, ::2])


def test_level1_read_across_origin_is_padded(pyramid):
    path, _ = pyramid
    with open_slide(path) as slide:
        region = slide.read_region((-64, -64), 1, (64, 64))
    assert (region[:32, :] == 255).all()
    assert (region[32:, 32:, 2] == 100).all()


def test_thumbnail_uses_deepest_level(pyramid, monkeypatch):
    path, _ = pyramid
    levels_read = []
    with open_slide(path) as slide:
        original = slide.read_region

        def spy(location, level, size):
            levels_read.append(level)
            return original(location, level, size)

        monkeypatch.setattr(slide, "read_region", spy)
        thumb = slide.thumbnail(8)
    assert set(levels_read) == {2}
    assert thumb.shape == (96, 128, 3)


def test_thumbnail_blocks_align_at_fractional_downsample(tmp_path, monkeypatch):
    # Level 1 of a 1001 px image is 500 px: downsample 2.002, so block starts at level
    # pixels 64, 128, ... map to non-integer level-0 positions.
    image = coordinate_image(1001, 1001)
    level1 = np.ascontiguousarray(image[::2, ::2][:500, :500])
    path = tmp_path / "odd.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(128, 128), photometric="rgb", subifds=1, resolution=(20000, 20000), resolutionunit="CENTIMETER")
        tif.write(level1, tile=(128, 128), photometric="rgb", subfiletype=1)
    monkeypatch.setattr(reader_module, "THUMBNAIL_BLOCK", 64)
    with open_slide(path) as slide:
        thumb = slide.thumbnail(slide.levels[1].downsample)
    assert thumb.shape[:2] == (500, 500)
    assert np.array_equal(thumb, level1)


# --- damaged and unsupported files ---------------------------------------------------


def test_missing_file_raises(tmp_path):
    with pytest.raises(SlideError, match="not found"):
        open_slide(tmp_path / "absent.svs")


def test_folder_raises(tmp_path):
    with pytest.raises(SlideError, match="folder"):
        open_slide(tmp_path)


def test_empty_file_raises(tmp_path):
    path = tmp_path / "empty.svs"
    path.write_bytes(b"")
    with pytest.raises(SlideError, match="empty"):
        open_slide(path)


def test_text_file_named_svs_raises(tmp_path):
    path = tmp_path / "notes.svs"
    path.write_text("this is not a slide\n")
    with pytest.raises(SlideError, match="could not be opened as a slide") as info:
        open_slide(path)
    assert "notes.svs" in str(info.value)


def test_random_bytes_raise(tmp_path):
    path = tmp_path / "corrupt.svs"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(SlideError, match="corrupt"):
        open_slide(path)


@pytest.mark.parametrize("keep_fraction", [0.05, 0.5, 0.8, 0.98])
def test_truncated_cmu_raises(cmu_slide, tmp_path, keep_fraction):
    data = cmu_slide.read_bytes()
    path = tmp_path / "truncated.svs"
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(SlideError, match="truncated or corrupt") as info:
        open_slide(path)
    assert "truncated.svs" in str(info.value)


def test_truncated_tile_data_raises(tmp_path):
    path = tmp_path / "cut.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(coordinate_image(512, 512), tile=(128, 128), photometric="rgb")
    data = path.read_bytes()
    # tifffile writes the directory before the tile data, so this cuts only pixels.
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match="ends at byte"):
        open_slide(path, mpp=0.5)


def test_truncated_jpeg_raises(jpeg_no_mpp, tmp_path):
    data = jpeg_no_mpp.read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError, match="cut.jpg"):
        open_slide(path, mpp=0.25)


def test_rgba_png_transparent_is_white(tmp_path):
    from PIL import Image

    pixels = np.zeros((64, 64, 4), np.uint8)
    pixels[16:48, 16:48] = (200, 100, 150, 255)
    path = tmp_path / "rgba.png"
    Image.fromarray(pixels, "RGBA").save(path)
    region = open_slide(path, mpp=0.5).read_region((0, 0), 0, (64, 64))
    assert region[0, 0].tolist() == [255, 255, 255]
    assert region[32, 32].tolist() == [200, 100, 150]


def test_sixteen_bit_png_scaled_to_eight_bits(tmp_path):
    from PIL import Image

    pixels = np.full((32, 32), 65535, np.uint16)
    pixels[:, :16] = 32768
    path = tmp_path / "grey16.png"
    Image.fromarray(pixels).save(path)
    region = open_slide(path, mpp=0.5).read_region((0, 0), 0, (32, 32))
    assert region[0, 31].tolist() == [255, 255, 255]
    assert region[0, 0].tolist() == [128, 128, 128]


def test_float_tiff_scaled_from_unit_range(tmp_path):
    pixels = np.zeros((64, 64, 3), np.float32)
    pixels[..., 0] = 1.0
    pixels[..., 1] = 0.5
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, pixels, photometric="rgb", resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    with open_slide(path) as slide:
        region = slide.read_region((0, 0), 0, (64, 64))
    assert region.dtype == np.uint8
    assert region[10, 10].tolist() == [255, 128, 0]


@pytest.mark.parametrize(("scale", "overshoot"), [(1.0, 1.02), (255.0, 255.0), (65535.0, 65535.0)])
def test_float_tiff_range_guessed_from_largest_value(tmp_path, scale, overshoot):
    # A float image in [0, 1] with values slightly above 1 (as colour conversions leave) must not turn black.
    pixels = np.full((64, 64, 3), 0.5 * scale, np.float32)
    pixels[0, 0] = overshoot
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, pixels, photometric="rgb", resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    with open_slide(path) as slide:
        region = slide.read_region((0, 0), 0, (64, 64))
    assert region[10, 10].tolist() == [128, 128, 128]
