"""Colour deconvolution of H&E tiles into hematoxylin optical density for segmentation.

Optical density (OD) here is ``-log10((I + 1) / 256)`` per RGB channel, so white glass
is close to 0 and a fully absorbing pixel is about 2.4. This decadic, offset scale is
the one the watershed thresholds and the cell table's ``hematoxylin_od`` use. Slide QC
reports ODs as ``-ln(I / I0)`` (:func:`shest.stain.optical_density`), about 2.3 times
larger. The stain vectors of one slide are estimated with
:func:`shest.stain.macenko_vectors`, which gives the same directions on either scale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from shest.stain import RUIFROK_EOSIN, RUIFROK_HEMATOXYLIN, macenko_vectors

log = logging.getLogger(__name__)

# OD of each 8-bit intensity; a lookup table is faster than a log per pixel.
OD_LUT = (-np.log10((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)
# OD of a black pixel, the largest on this scale (log10(256), about 2.41).
MAX_OD = float(OD_LUT[0])
# Pixels with an OD below this in any channel are treated as glass or too faint to
# carry stain information (the beta of Macenko et al.).
MIN_TISSUE_OD = 0.15
# Percentile of the angle distribution taken as each stain's extreme (alpha).
ANGLE_PERCENTILE = 1.0
# Pixels drawn for the estimate; more add time and change the vectors by < 0.01.
MAX_ESTIMATION_PIXELS = 200_000


@dataclass(frozen=True)
class StainVectors:
    """Hematoxylin and eosin unit vectors in RGB optical-density space.

    Attributes
    ----------
    hematoxylin, eosin
        Unit vectors (OD of red, green, blue).
    source
        ``"macenko"`` when estimated from the slide, ``"ruifrok"`` for the published
        default vectors.
    """

    hematoxylin: tuple[float, float, float]
    eosin: tuple[float, float, float]
    source: str

    @classmethod
    def ruifrok(cls) -> StainVectors:
        """Return the published H&E vectors of Ruifrok and Johnston (as in scikit-image)."""
        h = np.asarray(RUIFROK_HEMATOXYLIN) / np.linalg.norm(RUIFROK_HEMATOXYLIN)
        e = np.asarray(RUIFROK_EOSIN) / np.linalg.norm(RUIFROK_EOSIN)
        return cls(_rounded(h), _rounded(e), "ruifrok")

    def to_dict(self) -> dict:
        return {"hematoxylin": list(self.hematoxylin), "eosin": list(self.eosin), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict) -> StainVectors:
        return cls(tuple(data["hematoxylin"]), tuple(data["eosin"]), str(data["source"]))

    def unmixing_matrix(self) -> np.ndarray:
        """Return the 3 x 3 float32 matrix that maps OD vectors to (H, E, residual) concentrations."""
        h = np.asarray(self.hematoxylin, dtype=np.float64)
        e = np.asarray(self.eosin, dtype=np.float64)
        residual = np.cross(h, e)
        residual /= np.linalg.norm(residual)
        mixing = np.stack([h, e, residual])
        return np.linalg.inv(mixing).astype(np.float32)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Return the per-channel OD (float32, same shape) of a uint8 RGB image."""
    return OD_LUT[np.asarray(rgb, dtype=np.uint8)]


def hematoxylin_od(rgb: np.ndarray, stains: StainVectors) -> np.ndarray:
    """Return the hematoxylin concentration (OD units, float32, H x W) of a uint8 RGB image.

    Negative values (pixels with no hematoxylin, where noise pushes the unmixing
    below 0) are kept, so that smoothing is not biased.
    """
    column = stains.unmixing_matrix()[:, 0]
    lut = OD_LUT
    rgb = np.asarray(rgb, dtype=np.uint8)
    # Per-channel lookup of OD times the channel's weight, summed: one pass, float32.
    out = (lut * column[0])[rgb[..., 0]]
    out += (lut * column[1])[rgb[..., 1]]
    out += (lut * column[2])[rgb[..., 2]]
    return out


def estimate_stain_vectors(rgb: np.ndarray, min_pixels: int = 5000) -> StainVectors:
    """Estimate a slide's H&E vectors with the method of Macenko et al.

    Parameters
    ----------
    rgb
        uint8 RGB pixels of tissue, any shape ending in 3 (several windows may be
        stacked).
    min_pixels
        Below this many tissue pixels the estimate is unreliable and the Ruifrok
        vectors are returned instead.

    Returns
    -------
    StainVectors
        With ``source="macenko"``, or the Ruifrok vectors when there is too little
        tissue or the estimate is degenerate (both vectors nearly the same).
    """
    od = optical_density(rgb).reshape(-1, 3)
    od = od[(od > MIN_TISSUE_OD).all(axis=1)].astype(np.float64)
    if len(od) < min_pixels:
        log.info("Only %d tissue pixels to estimate stain vectors; using the Ruifrok H&E vectors", len(od))
        return StainVectors.ruifrok()
    if len(od) > MAX_ESTIMATION_PIXELS:
        # A fixed seed keeps the estimate, and so every output, reproducible.
        picked = np.random.default_rng(0).choice(len(od), MAX_ESTIMATION_PIXELS, replace=False)
        od = od[np.sort(picked)]

    try:
        hematoxylin, eosin = macenko_vectors(od, ANGLE_PERCENTILE)
    except ValueError as exc:
        log.warning("Stain vectors could not be estimated (%s); using the Ruifrok H&E vectors", exc)
        return StainVectors.ruifrok()
    if (hematoxylin < 0).any() or (eosin < 0).any() or float(hematoxylin @ eosin) > 0.98:
        log.warning(
            "Stain vector estimate is degenerate (H %s, E %s); using the Ruifrok H&E vectors",
            np.round(hematoxylin, 3), np.round(eosin, 3),
        )
        return StainVectors.ruifrok()
    return StainVectors(_rounded(hematoxylin), _rounded(eosin), "macenko")


def _rounded(vector: np.ndarray) -> tuple[float, float, float]:
    # Rounded so the vectors print and serialise identically on every platform.
    return tuple(round(float(v), 5) for v in vector)  # type: ignore[return-value]
