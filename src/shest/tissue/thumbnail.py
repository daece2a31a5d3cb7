"""Low-resolution slide thumbnails and their mapping back to level-0 pixels."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from shest.slide.reader import Slide

log = logging.getLogger(__name__)

# Default longest thumbnail side: it bounds the memory of every thumbnail step.
MAX_THUMBNAIL_SIDE = 8192


@dataclass(frozen=True)
class Thumbnail:
    """An RGB image of the whole slide at a known downsample.

    Thumbnail pixel (row, col) covers level-0 x in ``[col * downsample_x,
    (col + 1) * downsample_x)`` and y likewise. The x and y downsamples differ by
    under one pixel's worth because the thumbnail size is rounded.
    """

    image: np.ndarray
    downsample_x: float
    downsample_y: float
    slide_mpp_x: float
    slide_mpp_y: float

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def downsample(self) -> float:
        """Mean of the x and y downsamples (level-0 pixels per thumbnail pixel)."""
        return (self.downsample_x + self.downsample_y) / 2.0

    @property
    def mpp(self) -> float:
        """Thumbnail pixel size in µm/px (mean of x and y)."""
        return (self.downsample_x * self.slide_mpp_x + self.downsample_y * self.slide_mpp_y) / 2.0

    @property
    def pixel_area_mm2(self) -> float:
        """Area of one thumbnail pixel on the glass, in mm²."""
        return self.downsample_x * self.slide_mpp_x * self.downsample_y * self.slide_mpp_y / 1e6

    def describe(self) -> dict[str, float | int]:
        """Return the JSON description stored in the QC report to map mask pixels to level 0."""
        return {
            "width": self.width,
            "height": self.height,
            "downsample_x": self.downsample_x,
            "downsample_y": self.downsample_y,
            "downsample": self.downsample,
            "mpp": self.mpp,
        }


def choose_thumbnail_downsample(
    slide_size: tuple[int, int],
    slide_mpp: float,
    thumbnail_mpp: float = 8.0,
    min_side: int = 1024,
    max_side: int = MAX_THUMBNAIL_SIDE,
) -> float:
    """Return the downsample (level-0 pixels per thumbnail pixel) for tissue detection.

    The thumbnail aims at ``thumbnail_mpp`` µm/px. Small images get a finer
    thumbnail so that its longer side reaches ``min_side`` pixels (or the full
    image), and very large slides a coarser one so that it stays within
    ``max_side``, which bounds the memory of everything computed on it.
    """
    if not 0 < thumbnail_mpp < math.inf:
        raise ValueError(f"Thumbnail resolution must be a finite positive number, found {thumbnail_mpp} µm/px")
    if not 1 <= min_side <= max_side:
        raise ValueError(f"Thumbnail sides must satisfy 1 <= min_side <= max_side, found {min_side} and {max_side}")
    longest = max(slide_size)
    downsample = thumbnail_mpp / slide_mpp
    downsample = min(downsample, longest / min_side)
    downsample = max(downsample, longest / max_side)
    return max(1.0, downsample)


def read_thumbnail(
    slide: Slide,
    thumbnail_mpp: float = 8.0,
    min_side: int = 1024,
    max_side: int = MAX_THUMBNAIL_SIDE,
) -> Thumbnail:
    """Read a thumbnail of the whole slide, block by block (see :meth:`Slide.thumbnail`)."""
    downsample = choose_thumbnail_downsample(slide.dimensions, slide.mpp, thumbnail_mpp, min_side, max_side)
    image = slide.thumbnail(downsample)
    width0, height0 = slide.dimensions
    thumb = Thumbnail(
        image=image,
        downsample_x=width0 / image.shape[1],
        downsample_y=height0 / image.shape[0],
        slide_mpp_x=slide.mpp_x,
        slide_mpp_y=slide.mpp_y,
    )
    log.debug("Thumbnail of %s: %d x %d px at %.2f µm/px", slide.path.name, thumb.width, thumb.height, thumb.mpp)
    return thumb
