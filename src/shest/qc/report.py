"""Slide QC in the spirit of HistoQC: every metric of one slide, with warnings instead of failures."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from shapely.geometry import box as shapely_box

from shest.errors import InputError
from shest.qc.background import BackgroundResult, measure_background
from shest.qc.focus import BLUR_THRESHOLD, FocusResult
from shest.qc.image import ImageContent, inspect_image
from shest.qc.ink import InkResult, summarize_ink
from shest.qc.objective import ObjectiveCheck, check_mpp_override, check_objective_power
from shest.qc.stain import StainParams, StainResult, StainSampler, estimate_stains
from shest.qc.tiles import TileSample, TileSampleParams, read_tiles, sample_tissue_tiles
from shest.slide.reader import Slide
from shest.tissue.detect import TissueMask, TissueParams, detect_tissue
from shest.tissue.roi import rasterize_roi
from shest.tissue.thumbnail import MAX_THUMBNAIL_SIDE, Thumbnail, read_thumbnail

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QcThresholds:
    """Limits beyond which a metric adds a warning (see docs/qc.md for the reasons)."""

    blur_threshold: float = BLUR_THRESHOLD
    blurred_fraction_max: float = 0.25
    ink_fraction_max: float = 0.05
    background_brightness_min: float = 200.0
    stain_angle_max_deg: float = 35.0


@dataclass(frozen=True)
class QcParams:
    """All parameters of slide QC."""

    thumbnail_mpp: float = 8.0
    thumbnail_min_side: int = 1024
    thumbnail_max_side: int = MAX_THUMBNAIL_SIDE
    tissue: TissueParams = field(default_factory=TissueParams)
    tiles: TileSampleParams = field(default_factory=TileSampleParams)
    stain: StainParams = field(default_factory=StainParams)
    thresholds: QcThresholds = field(default_factory=QcThresholds)

    def __post_init__(self) -> None:
        if self.thumbnail_mpp <= 0:
            raise ValueError(f"thumbnail_mpp must be positive, found {self.thumbnail_mpp}")
        if not 1 <= self.thumbnail_min_side <= self.thumbnail_max_side:
            raise ValueError(
                f"thumbnail sides must satisfy 1 <= min_side <= max_side, "
                f"found {self.thumbnail_min_side} and {self.thumbnail_max_side}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SlideQc:
    """QC results of one slide."""

    info: dict[str, Any]
    params: QcParams
    thumbnail: Thumbnail
    tissue: TissueMask
    background: BackgroundResult
    ink: InkResult
    focus: FocusResult
    stain: StainResult | None
    objective: ObjectiveCheck
    warnings: list[str] = field(default_factory=list)
    image: ImageContent | None = None

    def metrics(self) -> dict[str, Any]:
        """Return the headline numbers, one value each (the MultiQC row and ``metrics`` in the report)."""
        stain = self.stain
        return {
            "tissue_area_mm2": round(self.tissue.area_mm2, 6),
            "tissue_fraction": round(self.tissue.fraction, 5),
            "focus_median": _rounded(self.focus.median, 3),
            "blurred_fraction": _rounded(self.focus.blurred_fraction, 4),
            "focus_tiles": self.focus.tiles_scored,
            "ink_fraction": self.ink.fraction,
            "ink_area_mm2": self.ink.area_mm2,
            "background_brightness": self.background.brightness,
            "mean_hematoxylin_od": stain.mean_hematoxylin_od if stain else None,
            "mean_eosin_od": stain.mean_eosin_od if stain else None,
            "mpp": (self.info["mpp_x"] + self.info["mpp_y"]) / 2.0,
            "objective_power": self.objective.objective_power,
            "objective_mpp_consistent": self.objective.consistent,
        }

    def details(self) -> dict[str, Any]:
        """Return the full result of each metric family for the QC report."""
        tissue = self.tissue
        return {
            "tissue": {
                "area_mm2": round(tissue.area_mm2, 6),
                "fraction": round(tissue.fraction, 5),
                "saturation_threshold": round(tissue.saturation_threshold, 4),
                "otsu_saturation_threshold": _rounded(tissue.otsu_threshold, 4),
                "roi_applied": tissue.roi_applied,
            },
            "ink": self.ink.to_dict(),
            "background": self.background.to_dict(),
            "focus": self.focus.to_dict(),
            "stain": self.stain.to_dict() if self.stain else None,
            "objective": self.objective.to_dict(),
            "image": self.image.to_dict() if self.image else None,
        }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def check_roi_overlaps_slide(roi, slide: Slide, roi_label: str) -> str | None:
    """Raise InputError when the region of interest lies entirely outside the slide image.

    Return a warning when part of it lies outside: that part is clipped away.
    """
    width, height = slide.dimensions
    left, top, right, bottom = (round(value) for value in roi.bounds)
    inside = roi.intersection(shapely_box(0, 0, width, height)).area
    if inside <= 0:
        raise InputError(
            f"{roi_label} lies outside {slide.path.name}: its bounds are x {left}-{right}, y {top}-{bottom}, but "
            f"the slide is {width} x {height} px. Export the ROI from this slide in level-0 pixel coordinates "
            "(QuPath's GeoJSON export uses them)."
        )
    if inside >= roi.area * 0.999:
        return None
    return (
        f"{100 * (1 - inside / roi.area):.1f} % of {roi_label[0].lower() + roi_label[1:]} lies outside the "
        f"{width} x {height} px slide (its bounds are x {left}-{right}, y {top}-{bottom}); only the part on the "
        "slide is used. Check that the ROI was exported from this slide."
    )


def assess_slide(slide: Slide, params: QcParams = QcParams(), roi=None, roi_name: str | None = None) -> SlideQc:
    """Run tissue detection and every QC metric on an open slide.

    Parameters
    ----------
    slide
        The slide, with its pixel size resolved.
    params
        QC parameters.
    roi
        Optional shapely (Multi)Polygon in level-0 pixels (see :func:`shest.tissue.load_roi`)
        that restricts tissue detection.
    roi_name
        The ROI's file name, for messages.

    Returns
    -------
    SlideQc
        Metrics and warnings. Problems with the slide's content (no tissue, blur,
        ink, odd stain, a greyscale or near-black image, an ROI without tissue) are
        warnings. Unreadable pixels raise :class:`SlideError`, and an ROI outside
        the slide raises :class:`InputError`.
    """
    warnings: list[str] = []
    info = slide.info()
    thumbnail = read_thumbnail(slide, params.thumbnail_mpp, params.thumbnail_min_side, params.thumbnail_max_side)

    roi_label = f"The region of interest in {roi_name}" if roi_name else "The region of interest"
    roi_mask = None
    if roi is not None:
        clipped = check_roi_overlaps_slide(roi, slide, roi_label)
        if clipped:
            warnings.append(clipped)
        roi_mask = rasterize_roi(roi, thumbnail.image.shape[:2], thumbnail.downsample_x, thumbnail.downsample_y)
    content = inspect_image(thumbnail.image)
    tissue = detect_tissue(thumbnail, params.tissue, roi_mask)
    if not content.usable:
        warnings.append(content.warning(slide.path.name))
    elif tissue.is_empty and roi_mask is not None and tissue.slide_mask.any():
        warnings.append(
            f"{roi_label} covers no tissue of {slide.path.name} (tissue was found only outside it), so the tile "
            "plan is empty. Check that the ROI was drawn on this slide, in level-0 pixel coordinates."
        )
    elif tissue.is_empty:
        warnings.append(
            f"No tissue detected in {slide.path.name}: the tile plan is empty. If the thumbnail shows tissue, "
            "it may be too pale for the saturation rule or smaller than --min-tissue-area-mm2."
        )

    background = measure_background(tissue)
    ink = summarize_ink(tissue)
    sample = sample_tissue_tiles(slide, tissue, params.tiles)
    focus, stain = _measure_tiles(slide, sample, background, params)
    warnings.extend(_metric_warnings(params, tissue, background, ink, focus, stain, colour_scan=content.usable))

    objective, objective_warnings = check_objective_power(slide.objective_power, slide.mpp)
    warnings.extend(objective_warnings)
    warnings.extend(check_mpp_override(slide.pixel_size, slide.metadata_pixel_size()))

    for message in warnings:
        log.warning("%s: %s", slide.path.name, message)
    return SlideQc(
        info=info,
        params=params,
        thumbnail=thumbnail,
        tissue=tissue,
        background=background,
        ink=ink,
        focus=focus,
        stain=stain,
        objective=objective,
        warnings=warnings,
        image=content,
    )


def _metric_warnings(
    params: QcParams,
    tissue: TissueMask,
    background: BackgroundResult,
    ink: InkResult,
    focus: FocusResult,
    stain: StainResult | None,
    colour_scan: bool = True,
) -> list[str]:
    """Return the warnings of the background, ink, focus and stain metrics.

    Without ``colour_scan`` (a greyscale or near-black image, which has its own
    warning) the background and ink rules describe nothing real and give no warning.
    """
    limits = params.thresholds
    warnings = []
    dark_glass = background.brightness is not None and background.brightness < limits.background_brightness_min
    if colour_scan and dark_glass:
        warnings.append(
            f"Background brightness is {background.brightness:.1f} (0-255), below "
            f"{limits.background_brightness_min:.1f}: the glass looks dark or tinted "
            "(dirty slide, scanner calibration, or tissue everywhere); tissue detection and stain values may be off."
        )
    if colour_scan and ink.fraction > limits.ink_fraction_max:
        warnings.append(
            f"Pen or marker ink covers {100 * ink.fraction:.1f}% of the marked area ({ink.area_mm2:.3f} mm²); "
            "ink regions are excluded from the tissue mask."
        )

    if not tissue.is_empty and focus.tiles_scored == 0:
        warnings.append(
            f"No tile of {params.tiles.tile_px} px at {focus.mpp:g} µm/px is at least "
            f"{100 * params.tiles.min_tissue_fraction:.0f}% tissue, so focus and stain were not measured."
        )
    blurred = focus.blurred_fraction
    if blurred is not None and blurred > limits.blurred_fraction_max:
        warnings.append(
            f"{100 * blurred:.0f}% of {focus.tiles_scored} tissue tiles are out of focus (variance of the Laplacian "
            f"below {focus.threshold:g} at {focus.mpp:g} µm/px); consider rescanning."
        )

    if focus.tiles_scored and stain is None:
        warnings.append("Too few stained pixels to estimate stain vectors.")
    if stain is not None:
        worst = max(stain.hematoxylin_angle_deg, stain.eosin_angle_deg)
        if worst > limits.stain_angle_max_deg:
            warnings.append(
                f"Stain vectors differ from typical H&E by up to {worst:.0f} degrees "
                f"(haematoxylin {stain.hematoxylin_angle_deg:.0f}, eosin {stain.eosin_angle_deg:.0f}); "
                "check that this is an H&E slide and that its colours are not faded or shifted."
            )
    return warnings


def _measure_tiles(
    slide: Slide, sample: TileSample, background: BackgroundResult, params: QcParams
) -> tuple[FocusResult, StainResult | None]:
    """Read the sampled tissue tiles once, scoring focus and collecting stained pixels."""
    focus = FocusResult(
        mpp=sample.mpp,
        tile_px=params.tiles.tile_px,
        threshold=params.thresholds.blur_threshold,
        eligible_tiles=sample.eligible,
    )
    sampler = StainSampler(background.optical_density_reference, params.stain)
    for tile, image in read_tiles(slide, sample):
        focus.add(tile, image)
        sampler.add(image)
    stain = estimate_stains(sampler.pixels(), params.stain) if sample.tiles else None
    return focus, stain
