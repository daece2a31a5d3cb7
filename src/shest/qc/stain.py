"""Stain QC: Macenko stain vectors and mean haematoxylin and eosin optical density.

The optical densities of up to a few thousand stained pixels per QC tile are pooled,
and :func:`shest.stain.macenko_vectors` estimates the slide's stain vectors from them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shest.stain import (
    RUIFROK_EOSIN,
    RUIFROK_HEMATOXYLIN,
    angle_deg,
    macenko_vectors,
    optical_density,
    stain_concentrations,
)

log = logging.getLogger(__name__)


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
        hematoxylin_angle_deg=round(angle_deg(h, RUIFROK_HEMATOXYLIN), 2),
        eosin_angle_deg=round(angle_deg(e, RUIFROK_EOSIN), 2),
    )
