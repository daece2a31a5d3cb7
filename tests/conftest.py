"""Shared fixtures: the real H&E data folder and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Real H&E slides and annotated tiles live beside the project, not in it.
DATA_DIR = Path(os.environ.get("SHEST_TEST_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def data_file(relative: str) -> Path:
    """Return a file of the shared test data, or skip the test when it is absent."""
    path = DATA_DIR / relative
    if not path.exists():
        pytest.skip(
            f"test data {relative} not found under {DATA_DIR}; "
            "set SHEST_TEST_DATA to the folder holding wsi/, tiles/ and nuclei/"
        )
    return path


@pytest.fixture
def cmu_slide() -> Path:
    """Aperio SVS, 2220 x 2967 px, 0.499 µm/px, skin."""
    return data_file("wsi/CMU-1-Small-Region.svs")


@pytest.fixture
def tcga_no_mpp_slide() -> Path:
    """Aperio SVS with JPEG 2000 tiles and no µm/px in its metadata."""
    return data_file("wsi/TCGA-CR-7395-01A-01-TS1.svs")


@pytest.fixture
def ome_tile() -> Path:
    """OME-TIFF TMA core, 0.50008 µm/px, that OpenSlide cannot open."""
    return data_file("tiles/tma_core_he.ome.tif")


@pytest.fixture
def jpeg_no_mpp() -> Path:
    """JPEG tile of dense tumour with no recorded pixel size (about 40x)."""
    return data_file("tiles/tumour_he_no_mpp.jpg")
