"""PNG outputs of tissue detection: the binary mask and the thumbnail with outlines."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

TISSUE_OUTLINE_RGB = (0, 160, 0)
INK_OUTLINE_RGB = (230, 0, 230)


def save_mask_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Save a boolean mask as an 8-bit greyscale PNG (255 inside, 0 outside)."""
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(path, format="PNG")


def outline_image(rgb: np.ndarray, tissue: np.ndarray, ink: np.ndarray | None = None) -> np.ndarray:
    """Return a copy of ``rgb`` with tissue outlined in green and ink in magenta.

    Lines are about 1/500 of the longer side wide (1 to 4 px).
    """
    out = rgb.copy()
    thickness = int(np.clip(round(max(rgb.shape[:2]) / 500), 1, 4))
    layers = [(ink, INK_OUTLINE_RGB)] if ink is not None else []
    layers.append((tissue, TISSUE_OUTLINE_RGB))
    for mask, colour in layers:
        if mask is None or not mask.any():
            continue
        edges = find_boundaries(mask, mode="inner")
        if thickness > 1:
            edges = ndi.binary_dilation(edges, iterations=thickness - 1) & mask
        out[edges] = colour
    return out


def save_outline_png(path: str | os.PathLike, rgb: np.ndarray, tissue: np.ndarray, ink: np.ndarray | None = None) -> None:
    """Save the thumbnail with the tissue (and ink) outlines drawn; see :func:`outline_image`."""
    Image.fromarray(outline_image(rgb, tissue, ink)).save(path, format="PNG")
