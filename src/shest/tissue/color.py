"""Colour features of H&E images: HSV planes, grey levels and marker-ink pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.color import rgb2gray, rgb2hsv

# Rows converted per call, so float64 intermediates stay small for large thumbnails.
_BLOCK_ROWS = 512


@dataclass(frozen=True)
class HsvPlanes:
    """Hue in degrees (0-360), saturation and value (0-1), as float32 arrays."""

    hue: np.ndarray
    saturation: np.ndarray
    value: np.ndarray


def hsv_planes(rgb: np.ndarray) -> HsvPlanes:
    """Convert an RGB uint8 image to HSV with :func:`skimage.color.rgb2hsv`, in row blocks."""
    height, width = rgb.shape[:2]
    hue = np.empty((height, width), dtype=np.float32)
    saturation = np.empty_like(hue)
    value = np.empty_like(hue)
    for start in range(0, height, _BLOCK_ROWS):
        block = rgb2hsv(rgb[start : start + _BLOCK_ROWS, :, :3])
        hue[start : start + _BLOCK_ROWS] = block[..., 0] * 360.0
        saturation[start : start + _BLOCK_ROWS] = block[..., 1]
        value[start : start + _BLOCK_ROWS] = block[..., 2]
    return HsvPlanes(hue, saturation, value)


def grey_levels(rgb: np.ndarray) -> np.ndarray:
    """Return luminance on a 0-255 scale (skimage's Rec. 709 weights) as float32."""
    out = np.empty(rgb.shape[:2], dtype=np.float32)
    for start in range(0, rgb.shape[0], _BLOCK_ROWS):
        out[start : start + _BLOCK_ROWS] = rgb2gray(rgb[start : start + _BLOCK_ROWS, :, :3]) * 255.0
    return out


@dataclass(frozen=True)
class InkParams:
    """Pixel rule for pen and marker ink on a thumbnail.

    Blue and green inks have hues far from haematoxylin (about 230-300 degrees) and
    eosin (about 300-360 and 0-20 degrees). Black ink and other opaque debris are
    darker than stained tissue at thumbnail resolution. Red ink has the hue of eosin
    and is not detected. Pieces under ``min_area_mm2`` are dropped: pen strokes are
    far larger, while clusters of dark nuclei or specks of dye on thumbnails finer
    than about 2 µm/px pass the pixel rule.
    """

    hue_min_deg: float = 70.0
    hue_max_deg: float = 230.0
    saturation_min: float = 0.2
    dark_value_max: float = 0.15
    min_area_mm2: float = 0.001


def ink_mask(hsv: HsvPlanes, params: InkParams = InkParams()) -> np.ndarray:
    """Return the pixels that pass the ink colour rule of :class:`InkParams`, before the area filter."""
    coloured = (hsv.hue >= params.hue_min_deg) & (hsv.hue <= params.hue_max_deg)
    coloured &= hsv.saturation > params.saturation_min
    dark = hsv.value < params.dark_value_max
    return coloured | dark
