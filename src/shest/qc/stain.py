"""Stain QC: Macenko stain vectors and mean haematoxylin and eosin optical density.

Source: Macenko et al., "A method for normalizing histology slides for quantitative
analysis", ISBI 2009. The optical densities of stained pixels lie close to the plane
spanned by the two stain vectors. Within that plane, the vectors are the directions
at the ``alpha`` and ``100 - alpha`` percentiles of the pixels' angles.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shest.tissue.color import optical_density

log = logging.getLogger(__name__)

# Haematoxylin and eosin OD vectors of Ruifrok & Johnston (2001), as used by
# skimage.color.rgb2hed; the reference for "typical H&E".
REFERENCE_HEMATOXYLIN = (0.65, 0.70, 0.29)
REFERENCE_EOSIN = (0.07, 0.99, 0.11)


@dataclass(frozen=True)
class StainParams:
    """Macenko parameters and pixel sampling.

    ``beta`` is the OD below which a channel counts as unstained (pixels with any
    channel under it are dropped), ``alpha`` the percentile of the angle range.
    Up to ``pixels_per_tile`` stained pixels of each QC tile are drawn with a fixed
    ``seed``, so a rerun gives the same vectors.
    """

    beta: float = 0.15
    alpha: float = 1.0
    pixels_per_tile: int = 2000
    min_pixels: int = 500
    seed: int = 0


@dataclass(frozen=True)
class StainResult:
    """Stain vectors (unit OD vectors, RGB order) and mean stain amounts over stained pixels."""

    hematoxylin: tuple[float, float, float]
    eosin: tuple[float, float, float]
    mean_hematoxylin_od: float
    mean_eosin_od: float
    pixels: int
    hematoxylin_angle_deg: float
    eosin_angle_deg: float

    def to_dict(self) -> dict:
        return {
            "method": "Macenko (2009), OD = -ln(I / I0)",
            "hematoxylin_vector": [round(v, 4) for v in self.hematoxylin],
            "eosin_vector": [round(v, 4) for v in self.eosin],
            "mean_hematoxylin_od": self.mean_hematoxylin_od,
            "mean_eosin_od": self.mean_eosin_od,
            "pixels": self.pixels,
            "hematoxylin_angle_to_reference_deg": self.hematoxylin_angle_deg,
            "eosin_angle_to_reference_deg": self.eosin_angle_deg,
        }


class StainSampler:
    """Collects stained-pixel optical densities from QC tiles, with a bounded sample per tile."""

    def __init__(self, background: Sequence[float], params: StainParams = StainParams()) -> None:
        self.background = tuple(float(v) for v in background)
        self.params = params
        self._rng = np.random.default_rng(params.seed)
        self._chunks: list[np.ndarray] = []

    def add(self, rgb: np.ndarray) -> None:
        od = optical_density(rgb, self.background).reshape(-1, 3)
        stained = od[(od >= self.params.beta).all(axis=1)]
        if len(stained) > self.params.pixels_per_tile:
            pick = self._rng.choice(len(stained), self.params.pixels_per_tile, replace=False)
            stained = stained[np.sort(pick)]
        self._chunks.append(stained)

    def pixels(self) -> np.ndarray:
        if not self._chunks:
            return np.empty((0, 3), dtype=np.float32)
        return np.concatenate(self._chunks)


def macenko_vectors(od: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Return the (2, 3) haematoxylin and eosin unit vectors of stained-pixel ODs.

    Raises
    ------
    ValueError
        Fewer than 3 pixels, or pixels that do not span a plane.
    """
    if len(od) < 3:
        raise ValueError(f"Macenko needs at least 3 stained pixels, found {len(od)}")
    covariance = np.cov(od.astype(np.float64), rowvar=False)
    _, eigenvectors = np.linalg.eigh(covariance)
    plane = eigenvectors[:, 1:3]
    # Make both plane axes point into the positive-OD octant, so that the projected
    # angles are comparable across slides (eigenvector signs are arbitrary).
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)
    projected = od @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [alpha, 100.0 - alpha])
    v_low = plane @ np.array([math.cos(low), math.sin(low)])
    v_high = plane @ np.array([math.cos(high), math.sin(high)])
    # Haematoxylin absorbs more red light than eosin does.
    vectors = np.array([v_low, v_high] if v_low[0] > v_high[0] else [v_high, v_low])
    vectors *= np.where(vectors.sum(axis=1, keepdims=True) < 0, -1.0, 1.0)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms < 1e-9):
        raise ValueError("Stained pixels do not span two stain directions")
    return vectors / norms


def stain_concentrations(od: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Return the (n, 2) amounts of each stain per pixel by least squares (OD units)."""
    solution, *_ = np.linalg.lstsq(vectors.T.astype(np.float64), od.T.astype(np.float64), rcond=None)
    return solution.T


def angle_deg(a: Sequence[float], b: Sequence[float]) -> float:
    """Return the angle between two vectors in degrees."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def estimate_stains(od: np.ndarray, params: StainParams = StainParams()) -> StainResult | None:
    """Estimate stain vectors and mean stain amounts; None with fewer than ``min_pixels`` pixels."""
    if len(od) < params.min_pixels:
        log.debug("Only %d stained pixels; stain vectors not estimated", len(od))
        return None
    try:
        vectors = macenko_vectors(od, params.alpha)
    except ValueError as exc:
        log.debug("Stain vectors not estimated: %s", exc)
        return None
    amounts = stain_concentrations(od, vectors)
    h, e = vectors
    return StainResult(
        hematoxylin=tuple(float(v) for v in h),
        eosin=tuple(float(v) for v in e),
        mean_hematoxylin_od=round(float(np.clip(amounts[:, 0], 0, None).mean()), 4),
        mean_eosin_od=round(float(np.clip(amounts[:, 1], 0, None).mean()), 4),
        pixels=int(len(od)),
        hematoxylin_angle_deg=round(angle_deg(h, REFERENCE_HEMATOXYLIN), 2),
        eosin_angle_deg=round(angle_deg(e, REFERENCE_EOSIN), 2),
    )
