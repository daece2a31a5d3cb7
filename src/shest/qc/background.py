"""Background QC: brightness and colour of the glass around the tissue."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from shest.tissue.color import grey_levels
from shest.tissue.detect import TissueMask

# Fewer background pixels than this give no estimate (an image that is all tissue).
MIN_BACKGROUND_PIXELS = 100
# Thumbnail pixels next to tissue or ink left out of the background (partial pixels).
EDGE_MARGIN_PX = 2


@dataclass(frozen=True)
class BackgroundResult:
    """Mean luminance (0-255) and per-channel median of the background, or None without background."""

    brightness: float | None
    rgb: tuple[float, float, float] | None
    pixels: int
    fraction: float

    @property
    def optical_density_reference(self) -> tuple[float, float, float]:
        """Intensity I0 of clear glass for optical densities: the background, or white without one."""
        if self.rgb is None:
            return (255.0, 255.0, 255.0)
        return tuple(max(v, 1.0) for v in self.rgb)  # type: ignore[return-value]

    def to_dict(self) -> dict:
        return {
            "brightness": self.brightness,
            "rgb_median": list(self.rgb) if self.rgb else None,
            "pixels": self.pixels,
            "fraction": self.fraction,
        }


def measure_background(tissue: TissueMask) -> BackgroundResult:
    """Measure the thumbnail pixels that are neither tissue nor ink, nor next to either.

    Tissue and ink of the whole slide count, also outside a region of interest, so
    that tissue the ROI leaves out is not taken for glass.
    """
    image = tissue.thumbnail.image
    occupied = tissue.slide_mask | tissue.slide_ink
    if occupied.any():
        occupied = ndi.binary_dilation(occupied, iterations=EDGE_MARGIN_PX)
    background = ~occupied
    count = int(background.sum())
    fraction = count / background.size if background.size else 0.0
    if count < MIN_BACKGROUND_PIXELS:
        return BackgroundResult(brightness=None, rgb=None, pixels=count, fraction=fraction)
    pixels = image[background]
    brightness = float(grey_levels(pixels[None, :, :]).mean())
    rgb = tuple(float(v) for v in np.median(pixels, axis=0))
    return BackgroundResult(brightness=round(brightness, 2), rgb=rgb, pixels=count, fraction=round(fraction, 4))
