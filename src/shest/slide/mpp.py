"""Resolve the pixel size (µm/px, "mpp") of a slide from the most trusted source.

Order: an explicit override, the scanner's metadata, then TIFF resolution tags or OME
PhysicalSize. A missing value is an error that lists the ways to supply it, because a
wrong pixel size silently rescales every cell window and every distance downstream.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from shest.errors import MppError

log = logging.getLogger(__name__)

MPP_MIN = 0.05
MPP_MAX = 2.0

# Micrometres per unit of a TIFF ResolutionUnit (2 = inch, 3 = centimetre).
_TIFF_UNIT_UM = {2: 25400.0, 3: 10000.0}
# Micrometres per OME PhysicalSize unit symbol.
_OME_UNIT_UM = {"µm": 1.0, "um": 1.0, "μm": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}


@dataclass(frozen=True)
class PixelSize:
    """Pixel size in micrometres per pixel along x and y, and where it came from."""

    x: float
    y: float
    source: str  # "override", "vendor", "tiff-resolution", "ome" or "recorded"

    @property
    def mean(self) -> float:
        return (self.x + self.y) / 2.0


@dataclass(frozen=True)
class PixelSizeCandidate:
    """A pixel size read from one metadata source, before validation."""

    x: float
    y: float
    source: str
    detail: str


def check_mpp_range(value: float, path: Path, what: str) -> float:
    """Raise :class:`MppError` unless ``value`` lies in the plausible µm/px range."""
    if not (MPP_MIN <= value <= MPP_MAX):
        raise MppError(
            f"{path}: {what} is {value:g} µm/px, outside the plausible range "
            f"{MPP_MIN}-{MPP_MAX} µm/px for brightfield scans (40x is about 0.25, 20x about 0.5). "
            "Check the value, or pass the correct one with --mpp (or the samplesheet 'mpp' column)."
        )
    return value


def resolve_pixel_size(
    path: Path,
    override: float | None,
    vendor: PixelSizeCandidate | None,
    tiff_tags: PixelSizeCandidate | None,
    ome: PixelSizeCandidate | None,
    recorded: float | None = None,
) -> PixelSize:
    """Pick the pixel size by precedence: override, vendor, OME, TIFF resolution tags, recorded.

    ``recorded`` is the µm/px that an earlier stage used for this slide (stored in the
    tile plan or the cell table). It is the last resort, for slides whose metadata
    lack a pixel size, so that ``shest qc --mpp`` need not be repeated at every stage.

    OME PhysicalSize is tried before plain TIFF resolution tags because OME-TIFF
    writers often leave the TIFF tags at a print default. A TIFF tag value outside the
    plausible range is treated as absent (it is almost always a 72 or 96 dpi print
    setting), while an out-of-range override or vendor value is an error.
    """
    if override is not None:
        check_mpp_range(float(override), path, "the --mpp override")
        return PixelSize(float(override), float(override), "override")

    if vendor is not None:
        check_mpp_range(vendor.x, path, f"the scanner metadata ({vendor.detail}) x pixel size")
        check_mpp_range(vendor.y, path, f"the scanner metadata ({vendor.detail}) y pixel size")
        return PixelSize(vendor.x, vendor.y, vendor.source)

    ignored: list[str] = []
    for candidate in (ome, tiff_tags):
        if candidate is None:
            continue
        if MPP_MIN <= candidate.x <= MPP_MAX and MPP_MIN <= candidate.y <= MPP_MAX:
            return PixelSize(candidate.x, candidate.y, candidate.source)
        ignored.append(f"{candidate.detail} gives {candidate.x:g} µm/px, which is not a scan resolution")
        log.debug("%s: ignoring %s", path, ignored[-1])

    if recorded is not None:
        check_mpp_range(float(recorded), path, "the µm/px recorded by an earlier stage")
        return PixelSize(float(recorded), float(recorded), "recorded")

    hint = f" ({'; '.join(ignored)})" if ignored else ""
    raise MppError(
        f"{path}: no pixel size (µm/px) found in the file's metadata{hint}. "
        "Pass it with --mpp (for example --mpp 0.25 for a 40x scan or --mpp 0.5 for 20x), "
        "fill the 'mpp' column of the samplesheet, or re-export the slide with its resolution "
        "(OME-TIFF PhysicalSizeX/Y or TIFF XResolution/YResolution with a centimetre or inch unit)."
    )


def mpp_from_tiff_resolution(x_resolution, y_resolution, unit: int | None, detail: str) -> PixelSizeCandidate | None:
    """Convert TIFF XResolution/YResolution (pixels per unit) into µm/px, if the unit is physical."""
    if unit not in _TIFF_UNIT_UM:
        return None
    x = _as_float(x_resolution)
    y = _as_float(y_resolution)
    if not x or not y or x <= 0 or y <= 0:
        return None
    return PixelSizeCandidate(_TIFF_UNIT_UM[unit] / x, _TIFF_UNIT_UM[unit] / y, "tiff-resolution", detail)


def mpp_from_ome_xml(ome_xml: str | None) -> PixelSizeCandidate | None:
    """Read PhysicalSizeX/Y (and their units, µm by default) from the first OME Pixels element."""
    if not ome_xml:
        return None
    match = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", ome_xml)
    if not match:
        return None
    element = match.group(0)

    def attribute(name: str) -> str | None:
        found = re.search(rf'\b{name}="([^"]*)"', element)
        return found.group(1) if found else None

    x, y = attribute("PhysicalSizeX"), attribute("PhysicalSizeY")
    if x is None:
        return None
    y = y if y is not None else x
    x_unit = _OME_UNIT_UM.get(attribute("PhysicalSizeXUnit") or "µm")
    y_unit = _OME_UNIT_UM.get(attribute("PhysicalSizeYUnit") or "µm")
    if x_unit is None or y_unit is None:
        return None
    return PixelSizeCandidate(float(x) * x_unit, float(y) * y_unit, "ome", "OME PhysicalSizeX/Y")


def _as_float(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 2:
        numerator, denominator = value
        return float(numerator) / float(denominator) if denominator else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
