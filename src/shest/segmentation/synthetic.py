"""Synthetic H&E images with known nuclei, for tests and benchmarks.

Images are rendered with the Beer-Lambert law from hematoxylin and eosin
concentrations, so colour deconvolution gets realistic optical densities. The
background is pink eosin and the nuclei are ellipses of hematoxylin.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import ellipse

from shest.segmentation.stain import StainVectors

# Stain vectors of the kind Macenko estimation gives on real slides (the Ruifrok
# eosin vector has almost no red absorbance, which makes eosin-only pixels too pale to
# count as tissue).
SYNTHETIC_STAINS = StainVectors((0.61, 0.74, 0.30), (0.29, 0.89, 0.35), "synthetic")
BACKGROUND_HEMATOXYLIN = 0.06
BACKGROUND_EOSIN = 0.45
NUCLEUS_HEMATOXYLIN = 0.9
NUCLEUS_EOSIN = 0.15


@dataclass(frozen=True)
class Nucleus:
    """An elliptic nucleus in pixel coordinates (centre at pixel-index position)."""

    x: float
    y: float
    radius_x: float
    radius_y: float
    angle: float = 0.0


def render_he(
    shape: tuple[int, int],
    nuclei: Sequence[Nucleus],
    seed: int = 0,
    noise: float = 0.02,
    origin: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Render an H&E image and its label image (nucleus i has label i + 1).

    Parameters
    ----------
    shape
        (height, width) of the image.
    nuclei
        Nuclei in the coordinates of the full image.
    origin
        Position (x, y) of this image's top-left pixel in those coordinates, so that
        large images can be rendered tile by tile.
    seed
        Seed of the optical-density noise.
    noise
        Standard deviation of that noise, in OD units.
    """
    height, width = shape
    ox, oy = origin
    labels = np.zeros(shape, dtype=np.int32)
    for index, nucleus in enumerate(nuclei, start=1):
        if not (-nucleus.radius_x * 2 < nucleus.x - ox < width + nucleus.radius_x * 2):
            continue
        if not (-nucleus.radius_y * 2 < nucleus.y - oy < height + nucleus.radius_y * 2):
            continue
        rows, cols = ellipse(
            nucleus.y - oy, nucleus.x - ox, nucleus.radius_y, nucleus.radius_x, shape=shape, rotation=nucleus.angle
        )
        labels[rows, cols] = index
    inside = (labels > 0).astype(np.float32)
    # A slightly soft edge, as a scanner's optics give.
    inside = ndi.gaussian_filter(inside, 0.7)
    rng = np.random.default_rng(seed)
    hematoxylin = (
        BACKGROUND_HEMATOXYLIN * (1 - inside) + NUCLEUS_HEMATOXYLIN * inside
        + rng.normal(0.0, noise, shape).astype(np.float32)
    )
    eosin = BACKGROUND_EOSIN * (1 - inside) + NUCLEUS_EOSIN * inside + rng.normal(0.0, noise, shape).astype(np.float32)
    stains = SYNTHETIC_STAINS
    od = (
        np.clip(hematoxylin, 0, None)[..., None] * np.asarray(stains.hematoxylin, dtype=np.float32)
        + np.clip(eosin, 0, None)[..., None] * np.asarray(stains.eosin, dtype=np.float32)
    )
    rgb = np.clip(256.0 * np.power(10.0, -od) - 1.0, 0, 255).round().astype(np.uint8)
    return rgb, labels


def scatter_nuclei(
    shape: tuple[int, int],
    mpp: float,
    spacing_um: float = 14.0,
    diameter_um: tuple[float, float] = (6.0, 10.0),
    seed: int = 0,
) -> list[Nucleus]:
    """Return nuclei on a jittered grid, far enough apart that none touch.

    Parameters
    ----------
    shape
        (height, width) of the image in pixels.
    mpp
        Its µm/px.
    spacing_um
        Grid spacing; must exceed the largest diameter plus the jitter (a quarter of
        the spacing each way).
    diameter_um
        Range of the nuclei's long axis; the short axis is 0.6 to 1 times it.
    """
    rng = np.random.default_rng(seed)
    spacing = spacing_um / mpp
    height, width = shape
    nuclei = []
    for cy in np.arange(spacing / 2, height, spacing):
        for cx in np.arange(spacing / 2, width, spacing):
            long_axis = rng.uniform(*diameter_um) / mpp / 2
            short_axis = long_axis * rng.uniform(0.6, 1.0)
            jitter = rng.uniform(-0.25, 0.25, 2) * (spacing - 2 * long_axis)
            nuclei.append(
                Nucleus(cx + jitter[0], cy + jitter[1], long_axis, short_axis, rng.uniform(-math.pi / 2, math.pi / 2))
            )
    return nuclei


def write_pyramidal_tiff(
    path: str | os.PathLike,
    shape: tuple[int, int],
    mpp: float,
    nuclei: Sequence[Nucleus],
    tile: int = 512,
    levels: int = 3,
    seed: int = 0,
) -> None:
    """Write a tiled, pyramidal, JPEG-compressed TIFF of a synthetic H&E slide, tile by tile.

    Only one tile per level is in memory at a time, so slides far larger than memory
    can be made. The resolution tags record ``mpp``.
    """
    import tifffile

    height, width = shape
    resolution = (1e4 / mpp, 1e4 / mpp)
    centres = np.array([(n.x, n.y, max(n.radius_x, n.radius_y)) for n in nuclei], dtype=np.float64).reshape(-1, 3)

    def nuclei_in(x0: float, y0: float, x1: float, y1: float) -> list[Nucleus]:
        reach = centres[:, 2] * 2
        near = (
            (centres[:, 0] + reach > x0) & (centres[:, 0] - reach < x1)
            & (centres[:, 1] + reach > y0) & (centres[:, 1] - reach < y1)
        )
        return [nuclei[i] for i in np.flatnonzero(near)]

    def tiles_of(level: int):
        factor = 2**level
        level_h, level_w = math.ceil(height / factor), math.ceil(width / factor)
        for y in range(0, level_h, tile):
            for x in range(0, level_w, tile):
                th, tw = min(tile, level_h - y), min(tile, level_w - x)
                x0, y0 = x * factor, y * factor
                # Lower levels are rendered directly at their own scale, not averaged
                # from level 0: cheaper, and close enough for a synthetic slide.
                scaled = [
                    Nucleus(n.x / factor, n.y / factor, n.radius_x / factor, n.radius_y / factor, n.angle)
                    for n in nuclei_in(x0, y0, x0 + tw * factor, y0 + th * factor)
                ]
                rgb, _ = render_he((th, tw), scaled, seed=seed + level * 104729 + y * 7919 + x, origin=(x, y))
                padded = np.full((tile, tile, 3), 255, dtype=np.uint8)
                padded[:th, :tw] = rgb
                yield padded

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(levels):
            factor = 2**level
            level_shape = (math.ceil(height / factor), math.ceil(width / factor), 3)
            tif.write(
                tiles_of(level),
                shape=level_shape,
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                resolution=(resolution[0] / factor, resolution[1] / factor),
                resolutionunit="CENTIMETER",
                subfiletype=1 if level else 0,
            )
