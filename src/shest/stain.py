"""Optical density and H&E stain vectors, shared by slide QC, tissue detection and segmentation.

A pixel's optical density (OD) vector is modelled as a sum of stain vectors (unit
vectors in RGB OD space) weighted by the amount of each stain (Ruifrok and Johnston,
Anal Quant Cytol Histol 2001). The hematoxylin and eosin vectors of one slide are
estimated with the method of Macenko et al. ("A method for normalizing histology
slides for quantitative analysis", ISBI 2009). The ODs of stained pixels lie close to
the plane of their two main axes, and within that plane the stain vectors are the
directions at the ``alpha`` and ``100 - alpha`` percentiles of the pixels' angles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from skimage.color import rgb_from_hed

# Hematoxylin and eosin OD vectors of Ruifrok and Johnston (2001), the rows of
# skimage.color.rgb_from_hed: the reference for "typical H&E".
RUIFROK_HEMATOXYLIN: tuple[float, float, float] = tuple(float(v) for v in rgb_from_hed[0])  # type: ignore[assignment]
RUIFROK_EOSIN: tuple[float, float, float] = tuple(float(v) for v in rgb_from_hed[1])  # type: ignore[assignment]


def optical_density(rgb: np.ndarray, background: Sequence[float] = (255.0, 255.0, 255.0)) -> np.ndarray:
    """Return the optical density ``-ln(I / I0)`` per channel as float32, clipped at 0.

    Natural logarithms, as in Macenko et al. (2009) and TIAToolbox, so that the usual
    Macenko thresholds apply. ``background`` is the per-channel intensity I0 of
    clear glass; intensities are clipped to [1, I0] first.
    """
    i0 = np.asarray(background, dtype=np.float32).reshape(1, 3)
    flat = rgb.reshape(-1, rgb.shape[-1])[:, :3].astype(np.float32)
    flat = np.clip(flat, 1.0, i0)
    od = -np.log(flat / i0)
    return od.reshape(*rgb.shape[:-1], 3)


def macenko_vectors(od: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Return the (2, 3) hematoxylin and eosin unit vectors of stained-pixel ODs.

    The result does not depend on the OD's logarithm base, because only directions
    are estimated. Each vector is turned to have a positive sum.

    Parameters
    ----------
    od
        (n, 3) ODs of stained pixels (any positive OD scale).
    alpha
        Percentile of the angle distribution taken as each stain's extreme.

    Raises
    ------
    ValueError
        Fewer than 3 pixels, or pixels that do not span two stain directions.
    """
    if len(od) < 3:
        raise ValueError(f"Macenko needs at least 3 stained pixels, found {len(od)}")
    covariance = np.cov(np.asarray(od, dtype=np.float64), rowvar=False)
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
    # Hematoxylin absorbs more red light than eosin does.
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
