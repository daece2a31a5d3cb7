"""Ink QC: how much of the slide's marked area is pen or marker ink."""

from __future__ import annotations

from dataclasses import dataclass

from shest.tissue.detect import TissueMask


@dataclass(frozen=True)
class InkResult:
    """Ink area in mm², and its share of tissue plus ink (the area a pathologist marked or stained)."""

    area_mm2: float
    fraction: float

    def to_dict(self) -> dict:
        return {"area_mm2": self.area_mm2, "fraction": self.fraction}


def summarize_ink(tissue: TissueMask) -> InkResult:
    """Return the ink area and ``ink / (tissue + ink)``; 0 on a slide with neither."""
    ink_pixels = int(tissue.ink.sum())
    tissue_pixels = int((tissue.mask & ~tissue.ink).sum())
    total = ink_pixels + tissue_pixels
    fraction = ink_pixels / total if total else 0.0
    return InkResult(area_mm2=round(tissue.ink_area_mm2, 6), fraction=round(fraction, 5))
