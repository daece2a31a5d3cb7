"""Pixel size (µm/px): precedence of sources, unit conversion, range checks and messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from shest.errors import MppError
from shest.slide import open_slide
from shest.slide.mpp import (
    PixelSizeCandidate,
    mpp_from_ome_xml,
    mpp_from_tiff_resolution,
    resolve_pixel_size,
)

SLIDE = Path("slide.svs")
VENDOR = PixelSizeCandidate(0.2526, 0.2526, "vendor", "aperio metadata")
TIFF_TAGS = PixelSizeCandidate(0.5, 0.5, "tiff-resolution", "TIFF XResolution/YResolution")
OME = PixelSizeCandidate(0.25, 0.26, "ome", "OME PhysicalSizeX/Y")
PRINT_DPI = PixelSizeCandidate(352.777, 352.777, "tiff-resolution", "TIFF XResolution/YResolution")


def small_rgb() -> np.ndarray:
    image = np.full((300, 400, 3), 245, dtype=np.uint8)
    image[100:200, 100:300] = (190, 100, 170)
    return image


# --- precedence ----------------------------------------------------------------------


def test_override_beats_everything():
    size = resolve_pixel_size(SLIDE, 0.3, VENDOR, TIFF_TAGS, OME)
    assert (size.x, size.y, size.source) == (0.3, 0.3, "override")


def test_vendor_beats_file_tags():
    size = resolve_pixel_size(SLIDE, None, VENDOR, TIFF_TAGS, OME)
    assert size.source == "vendor"
    assert size.x == pytest.approx(0.2526)


def test_ome_beats_tiff_tags():
    size = resolve_pixel_size(SLIDE, None, None, TIFF_TAGS, OME)
    assert size.source == "ome"
    assert (size.x, size.y) == (0.25, 0.26)


def test_tiff_tags_used_last():
    size = resolve_pixel_size(SLIDE, None, None, TIFF_TAGS, None)
    assert size.source == "tiff-resolution"


def test_recorded_mpp_only_as_last_resort():
    assert resolve_pixel_size(SLIDE, None, None, TIFF_TAGS, None, recorded=0.3).source == "tiff-resolution"
    assert resolve_pixel_size(SLIDE, 0.4, None, None, None, recorded=0.3).source == "override"
    size = resolve_pixel_size(SLIDE, None, None, None, None, recorded=0.3)
    assert (size.x, size.y, size.source) == (0.3, 0.3, "recorded")


def test_recorded_mpp_out_of_range_rejected():
    with pytest.raises(MppError, match="recorded by an earlier stage"):
        resolve_pixel_size(SLIDE, None, None, None, None, recorded=5.0)


def test_mean_of_x_and_y():
    size = resolve_pixel_size(SLIDE, None, None, None, OME)
    assert size.mean == pytest.approx(0.255)


# --- missing and absurd values -------------------------------------------------------


def test_missing_names_file_and_fixes():
    with pytest.raises(MppError) as info:
        resolve_pixel_size(Path("/data/case7.svs"), None, None, None, None)
    message = str(info.value)
    assert "/data/case7.svs" in message
    assert "--mpp" in message
    assert "samplesheet" in message
    assert "PhysicalSizeX" in message


def test_print_resolution_treated_as_missing():
    with pytest.raises(MppError, match="no pixel size") as info:
        resolve_pixel_size(SLIDE, None, None, PRINT_DPI, None)
    assert "352.777" in str(info.value)


def test_print_resolution_falls_back_to_ome():
    size = resolve_pixel_size(SLIDE, None, None, PRINT_DPI, OME)
    assert size.source == "ome"


@pytest.mark.parametrize("value", [5.0, 0.01, 0.0, -0.5, float("nan")])
def test_absurd_override_shows_value(value):
    with pytest.raises(MppError, match="--mpp override") as info:
        resolve_pixel_size(SLIDE, value, None, None, None)
    assert f"{value:g}" in str(info.value)


def test_absurd_vendor_value_raises():
    bad = PixelSizeCandidate(25.0, 25.0, "vendor", "aperio metadata")
    with pytest.raises(MppError, match="25 µm/px"):
        resolve_pixel_size(SLIDE, None, bad, None, None)


def test_range_limits_accepted():
    assert resolve_pixel_size(SLIDE, 0.05, None, None, None).x == 0.05
    assert resolve_pixel_size(SLIDE, 2.0, None, None, None).x == 2.0


# --- TIFF and OME parsing ------------------------------------------------------------


def test_tiff_centimetre_unit():
    candidate = mpp_from_tiff_resolution(20000, 40000, 3, "tags")
    assert candidate.x == pytest.approx(0.5)
    assert candidate.y == pytest.approx(0.25)


def test_tiff_inch_unit_rational():
    candidate = mpp_from_tiff_resolution((101600, 1), (203200, 2), 2, "tags")
    assert candidate.x == pytest.approx(0.25)
    assert candidate.y == pytest.approx(0.25)


def test_tiff_unit_none_is_ignored():
    assert mpp_from_tiff_resolution(20000, 20000, 1, "tags") is None


def test_tiff_zero_resolution_is_ignored():
    assert mpp_from_tiff_resolution((0, 1), (0, 1), 3, "tags") is None


def test_ome_default_unit_is_micrometre():
    xml = '<OME><Image><Pixels ID="Pixels:0" PhysicalSizeX="0.5" PhysicalSizeY="0.25" SizeX="10"/></Image></OME>'
    candidate = mpp_from_ome_xml(xml)
    assert (candidate.x, candidate.y) == (0.5, 0.25)


def test_ome_nanometre_unit():
    xml = '<ome:Pixels PhysicalSizeX="250" PhysicalSizeXUnit="nm" PhysicalSizeY="250" PhysicalSizeYUnit="nm">'
    candidate = mpp_from_ome_xml(xml)
    assert candidate.x == pytest.approx(0.25)


def test_ome_without_physical_size():
    assert mpp_from_ome_xml('<OME><Image><Pixels SizeX="10"/></Image></OME>') is None


def test_ome_unknown_unit_is_ignored():
    assert mpp_from_ome_xml('<Pixels PhysicalSizeX="1" PhysicalSizeXUnit="furlong"/>') is None


# --- real slides ---------------------------------------------------------------------


def test_cmu_vendor_mpp(cmu_slide):
    with open_slide(cmu_slide) as slide:
        assert slide.mpp_x == pytest.approx(0.499)
        assert slide.mpp_y == pytest.approx(0.499)
        assert slide.pixel_size.source == "vendor"


def test_cmu_override_keeps_metadata_value(cmu_slide):
    with open_slide(cmu_slide, mpp=0.25) as slide:
        assert slide.mpp == 0.25
        assert slide.metadata_pixel_size().x == pytest.approx(0.499)


def test_ome_physical_size(ome_tile):
    with open_slide(ome_tile) as slide:
        assert slide.mpp_x == pytest.approx(0.50008, abs=1e-5)
        assert slide.pixel_size.source == "ome"
        assert slide.backend == "tiffslide"


def test_tcga_without_mpp_fails_clearly(tcga_no_mpp_slide):
    with pytest.raises(MppError) as info:
        open_slide(tcga_no_mpp_slide)
    message = str(info.value)
    assert tcga_no_mpp_slide.name in message
    assert "--mpp" in message
    assert "samplesheet" in message


def test_tcga_with_mpp_works(tcga_no_mpp_slide):
    with open_slide(tcga_no_mpp_slide, mpp=0.25) as slide:
        assert slide.mpp == 0.25
        assert slide.pixel_size.source == "override"
        assert slide.metadata_pixel_size() is None


def test_jpeg_without_mpp_fails(jpeg_no_mpp):
    with pytest.raises(MppError, match=jpeg_no_mpp.name):
        open_slide(jpeg_no_mpp)


def test_jpeg_with_mpp_works(jpeg_no_mpp):
    with open_slide(jpeg_no_mpp, mpp=0.25) as slide:
        assert slide.mpp == 0.25


@pytest.mark.parametrize("value", [5.0, 0.01])
def test_absurd_override_on_real_slide(cmu_slide, value):
    with pytest.raises(MppError) as info:
        open_slide(cmu_slide, mpp=value)
    assert f"{value:g} µm/px" in str(info.value)


# --- synthetic TIFFs -----------------------------------------------------------------


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "stripped"])
def test_tiff_resolution_in_centimetres(tmp_path, tiled):
    path = tmp_path / "cm.tif"
    tile = {"tile": (128, 128)} if tiled else {}
    tifffile.imwrite(path, small_rgb(), photometric="rgb", resolution=(40000, 40000), resolutionunit="CENTIMETER", **tile)
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.25)
        assert slide.pixel_size.source == "tiff-resolution"


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "stripped"])
def test_tiff_72_dpi_is_missing(tmp_path, tiled):
    path = tmp_path / "print.tif"
    tile = {"tile": (128, 128)} if tiled else {}
    tifffile.imwrite(path, small_rgb(), photometric="rgb", resolution=(72, 72), resolutionunit="INCH", **tile)
    with pytest.raises(MppError, match="no pixel size") as info:
        open_slide(path)
    assert "print.tif" in str(info.value)


def test_tiff_72_dpi_with_override(tmp_path):
    path = tmp_path / "print.tif"
    tifffile.imwrite(path, small_rgb(), photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    with open_slide(path, mpp=0.5) as slide:
        assert slide.mpp == 0.5


def test_png_with_physical_dpi(tmp_path):
    path = tmp_path / "tile.png"
    Image.fromarray(small_rgb()).save(path, dpi=(101600, 101600))
    with open_slide(path) as slide:
        assert slide.backend == "pillow"
        assert slide.mpp == pytest.approx(0.25, rel=1e-3)


def test_jpeg_72_dpi_is_missing(tmp_path):
    path = tmp_path / "tile.jpg"
    Image.fromarray(small_rgb()).save(path, dpi=(72, 72))
    with pytest.raises(MppError, match="tile.jpg"):
        open_slide(path)
