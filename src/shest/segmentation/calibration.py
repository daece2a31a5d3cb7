"""Per-slide calibration of segmentation on the slide's tissue pixels.

The stain vectors and the backend's settings (the watershed threshold) are estimated
once per slide from windows read at the segmentation resolution. Only tissue pixels
count. Tissue is found on a thumbnail of the slide with the rule of slide QC at its
default settings (:func:`shest.tissue.detect_tissue`). Glass and ink therefore never
enter the estimate, and the result does not depend on how much glass is in view.

The windows depend only on the slide, not on the tile plan, the chunk or a region of
interest, so every part of a slide is segmented with the same calibration:

- an image of at most :data:`CALIBRATION_WHOLE_SLIDE_PX` pixels at the segmentation
  resolution is read whole, and all its tissue pixels are used;
- a larger slide is sampled on a fixed lattice of :data:`CALIBRATION_LATTICE` x
  :data:`CALIBRATION_LATTICE` windows of :data:`CALIBRATION_WINDOW_UM` µm, and a
  window is used when at least :data:`CALIBRATION_MIN_TISSUE` of it is tissue.
"""

from __future__ import annotations

import logging

import numpy as np

from shest.segmentation.features import TileGeometry
from shest.segmentation.stain import StainVectors, estimate_stain_vectors
from shest.segmentation.wsi import CalibrationWindow, ReadPlan, Segmenter, read_box
from shest.slide.reader import Slide
from shest.tissue.detect import TissueMask, detect_tissue
from shest.tissue.thumbnail import read_thumbnail

log = logging.getLogger(__name__)

CALIBRATION_WINDOW_UM = 96.0
CALIBRATION_LATTICE = 12
CALIBRATION_MIN_TISSUE = 0.5
CALIBRATION_WHOLE_SLIDE_PX = 4_000_000


def slide_tissue(slide: Slide) -> TissueMask:
    """Detect the slide's tissue on a thumbnail with slide QC's rule at its default settings."""
    return detect_tissue(read_thumbnail(slide))


def tissue_in_image(tissue: TissueMask, geometry: TileGeometry, shape: tuple[int, int]) -> np.ndarray:
    """Return the tissue mask of an image read at ``geometry``, one value per image pixel.

    Each image pixel takes the value of the thumbnail pixel that contains its centre.
    """
    thumbnail = tissue.thumbnail
    height, width = shape
    x, y = geometry.to_level0(np.arange(width) + 0.5, np.arange(height) + 0.5)
    cols = np.clip((x / thumbnail.downsample_x).astype(np.int64), 0, tissue.mask.shape[1] - 1)
    rows = np.clip((y / thumbnail.downsample_y).astype(np.int64), 0, tissue.mask.shape[0] - 1)
    return tissue.mask[np.ix_(rows, cols)]


def calibration_windows(slide: Slide, reads: ReadPlan, tissue: TissueMask | None = None) -> list[CalibrationWindow]:
    """Read the calibration windows of a slide with their tissue masks (see the module docstring).

    Parameters
    ----------
    slide
        The open slide.
    reads
        How tiles are read at the segmentation resolution.
    tissue
        The slide's tissue; detected with :func:`slide_tissue` when not given.
    """
    if tissue is None:
        tissue = slide_tissue(slide)
    width, height = slide.dimensions
    scale = slide.mpp / reads.mpp
    if width * height * scale * scale <= CALIBRATION_WHOLE_SLIDE_PX:
        image, geometry = read_box(slide, (0, 0, width, height), reads)
        mask = tissue_in_image(tissue, geometry, image.shape[:2])
        return [CalibrationWindow(image, mask)] if mask.any() else []

    side = max(1, round(CALIBRATION_WINDOW_UM / slide.mpp))
    windows = []
    for j in range(CALIBRATION_LATTICE):
        for i in range(CALIBRATION_LATTICE):
            cx = (i + 0.5) * width / CALIBRATION_LATTICE
            cy = (j + 0.5) * height / CALIBRATION_LATTICE
            x0 = int(min(max(cx - side / 2, 0), max(width - side, 0)))
            y0 = int(min(max(cy - side / 2, 0), max(height - side, 0)))
            image, geometry = read_box(slide, (x0, y0, min(side, width), min(side, height)), reads)
            mask = tissue_in_image(tissue, geometry, image.shape[:2])
            if mask.mean() >= CALIBRATION_MIN_TISSUE:
                windows.append(CalibrationWindow(image, mask))
    log.debug("Calibration: %d of %d lattice windows are tissue", len(windows), CALIBRATION_LATTICE**2)
    return windows


def calibrate(slide: Slide, segmenter: Segmenter, reads: ReadPlan) -> StainVectors:
    """Estimate the slide's stain vectors on its tissue pixels and calibrate ``segmenter`` on the same windows."""
    windows = calibration_windows(slide, reads)
    if windows:
        pixels = np.concatenate([window.rgb[window.tissue] for window in windows])
    else:
        pixels = np.empty((0, 3), np.uint8)
    log.debug("Calibration on %d tissue pixels in %d windows", len(pixels), len(windows))
    stains = estimate_stain_vectors(pixels)
    log.info("Stain vectors (%s): hematoxylin %s, eosin %s", stains.source, stains.hematoxylin, stains.eosin)
    segmenter.calibrate(windows, reads.mpp, stains)
    return stains
