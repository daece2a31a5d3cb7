"""Weight-free nuclear segmentation: hematoxylin threshold, watershed and per-nucleus outlines.

The method starts from the classical recipe of QuPath's cell detection:

1. colour deconvolution to hematoxylin optical density with the slide's stain vectors;
2. optional background subtraction (grey opening);
3. Gaussian smoothing;
4. a threshold on the smoothed hematoxylin OD, estimated once per slide as the
   smaller of the Otsu and triangle (Zack et al., 1977) thresholds, so that every
   tile uses the same value;
5. small holes filled, so pale chromatin does not break a nucleus;
6. touching nuclei split by a watershed of the smoothed Euclidean distance transform,
   seeded by its h-maxima (one seed per local maximum that rises more than ``split_h_um``);
7. nuclei split further where a higher threshold breaks them into several
   nucleus-sized parts (touching nuclei with a paler seam but no neck in their shape),
   with a watershed of the hematoxylin image from those parts;
8. each nucleus's outline re-placed at its own level: a fraction of the way from the
   hematoxylin around it to its mean, so faint nuclei grow to their edge and dark
   nuclei lose the pale halo the slide-wide threshold gives them;
9. size filters in µm².

All lengths are in µm and areas in µm², converted to pixels at the resolution the
image is segmented at, so the same parameters work at 0.25 and 0.5 µm/px.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu, threshold_triangle
from skimage.measure import label as label_regions
from skimage.morphology import h_maxima
from skimage.segmentation import relabel_sequential, watershed

from shest.errors import InputError
from shest.segmentation.features import filter_label_areas
from shest.segmentation.stain import MAX_OD, StainVectors, hematoxylin_od
from shest.segmentation.wsi import CalibrationWindow

log = logging.getLogger(__name__)

# Threshold (hematoxylin OD above background) for slides with too little tissue to
# estimate one. It is the median of the estimates on the annotated tuning tiles.
FALLBACK_THRESHOLD_OD = 0.3
# Allowed threshold_scale: outside it the scaled estimate lies above nearly every
# nucleus or below the tissue around them (estimates were 0.26-0.60 OD on the real
# slides and annotated tiles measured).
THRESHOLD_SCALE_RANGE = (0.25, 4.0)
# Smoothed hematoxylin values above this percentile are left out of the threshold estimate.
THRESHOLD_CLIP_PERCENTILE = 99.9
# Smoothed hematoxylin OD up to which a histogram peak counts as flat background (see
# estimate_threshold). On the glass of three real scans the median after background
# subtraction and smoothing was under 0.01 OD; nuclei stand 0.2 OD and more above
# their surroundings.
FLAT_BACKGROUND_OD = 0.05
# Pixels closer than this to a nucleus are left out of the ring that gives its surrounding
# level, because they contain the blurred edge of the nucleus itself.
OUTLINE_RING_GAP_UM = 0.5
# A nucleus's own threshold is kept between these multiples of the slide's threshold, so
# a nucleus with an odd ring can neither flood its surroundings nor vanish.
OUTLINE_THRESHOLD_BOUNDS = (0.5, 2.0)


@dataclass(frozen=True)
class WatershedParams:
    """Parameters of the watershed backend; lengths in µm, areas in µm².

    Defaults were tuned on MoNuSeg and CPM-15 annotated tiles (see docs/segmentation.md).

    NOTE: there they reach detection F1 0.76 and AJI 0.53, short of the 0.80 and 0.60 aimed for.
    """

    smoothing_sigma_um: float = 0.5
    """Gaussian sigma applied to the hematoxylin OD before thresholding."""
    background_radius_um: float = 8.0
    """Radius of the grey opening subtracted as background; 0 turns it off."""
    threshold_od: float | None = None
    """Fixed hematoxylin OD threshold; ``None`` estimates one per slide (smaller of Otsu and triangle)."""
    threshold_scale: float = 1.1
    """Factor applied to the estimated threshold (below 1 finds fainter nuclei)."""
    max_hole_area_um2: float = 10.0
    """Holes in the foreground up to this area are filled."""
    split_sigma_um: float = 0.5
    """Gaussian sigma applied to the distance transform before seeding."""
    split_h_um: float = 0.3
    """A distance-transform maximum must rise this far above its surroundings to seed a nucleus."""
    split_level_factors: tuple[float, ...] = (1.3, 1.7)
    """Multiples of the threshold at which nuclei are thresholded again. A nucleus that falls
    apart into two or more parts of at least ``min_area_um2`` is split into them. Empty turns this off."""
    outline_fraction: float | None = 0.3
    """Each nucleus is re-thresholded at its surrounding level plus this fraction of its
    contrast (mean inside minus surrounding level); ``None`` keeps the slide-wide outline."""
    outline_ring_um: float = 1.5
    """Outer radius of the ring around a nucleus whose mean gives its surrounding level."""
    outline_reach_um: float = 2.0
    """A nucleus's outline may grow at most this far beyond its slide-wide outline."""
    min_area_um2: float = 6.0
    """Smallest nucleus kept."""
    max_area_um2: float = 200.0
    """Largest nucleus kept."""

    def __post_init__(self) -> None:
        numbers = [f.name for f in fields(self) if isinstance(getattr(self, f.name), (int, float))]
        for name in numbers:
            if not math.isfinite(getattr(self, name)):
                raise InputError(f"Watershed parameter {name} must be a finite number, found {getattr(self, name)}")

        for name in ("smoothing_sigma_um", "background_radius_um", "max_hole_area_um2", "split_sigma_um", "min_area_um2"):
            if getattr(self, name) < 0:
                raise InputError(f"Watershed parameter {name} must not be negative, found {getattr(self, name)}")
        if self.split_h_um <= 0:
            raise InputError(f"Watershed parameter split_h_um must be positive, found {self.split_h_um}")

        low, high = THRESHOLD_SCALE_RANGE
        if not low <= self.threshold_scale <= high:
            raise InputError(
                f"Watershed parameter threshold_scale (--threshold-scale) must be from {low:g} to {high:g}, "
                f"found {self.threshold_scale}"
            )
        if self.max_area_um2 <= self.min_area_um2:
            raise InputError(
                f"Watershed parameter max_area_um2 (--max-area-um2, {self.max_area_um2}) must be larger than "
                f"min_area_um2 (--min-area-um2, {self.min_area_um2})"
            )
        if self.threshold_od is not None and not 0 < self.threshold_od <= MAX_OD:
            raise InputError(
                f"Watershed parameter threshold_od (--threshold-od) must be above 0 and at most {MAX_OD:.2f}, "
                f"the optical density of a black pixel; found {self.threshold_od}"
            )

        # A list from JSON metadata or a command line becomes the tuple the dataclass declares.
        object.__setattr__(self, "split_level_factors", tuple(float(f) for f in self.split_level_factors))
        if any(factor <= 1.0 for factor in self.split_level_factors):
            raise InputError(
                f"Watershed parameter split_level_factors must all be above 1, found {list(self.split_level_factors)}"
            )
        if self.outline_fraction is not None and not 0.0 < self.outline_fraction < 1.0:
            raise InputError(f"Watershed parameter outline_fraction must lie in (0, 1), found {self.outline_fraction}")
        if self.outline_ring_um <= OUTLINE_RING_GAP_UM:
            raise InputError(
                f"Watershed parameter outline_ring_um must exceed {OUTLINE_RING_GAP_UM} µm, found {self.outline_ring_um}"
            )
        if self.outline_reach_um < 0:
            raise InputError(f"Watershed parameter outline_reach_um must not be negative, found {self.outline_reach_um}")


class WatershedSegmenter:
    """Segment nuclei in RGB tiles with :class:`WatershedParams`.

    Call :meth:`calibrate` once per slide before :meth:`segment`, so that every tile
    of the slide uses the same stain vectors and threshold.
    """

    name = "watershed"

    def __init__(self, params: WatershedParams | None = None) -> None:
        self.params = params or WatershedParams()
        self.stains = StainVectors.ruifrok()
        if self.params.threshold_od is not None:
            self.threshold_od = self.params.threshold_od
            self.threshold_source = "parameter"
        else:
            # Replaced by the slide's estimate in calibrate().
            self.threshold_od = FALLBACK_THRESHOLD_OD * self.params.threshold_scale
            self.threshold_source = "fallback"

    def calibrate(self, windows: Sequence[CalibrationWindow | np.ndarray], mpp: float, stains: StainVectors) -> None:
        """Set the stain vectors and estimate the slide's threshold from sample windows.

        Parameters
        ----------
        windows
            Windows of the slide at the segmentation resolution with their tissue
            masks; the threshold is estimated on the tissue pixels only. A plain uint8
            RGB image counts as tissue throughout.
        mpp
            µm/px of ``windows``.
        stains
            The slide's stain vectors.
        """
        self.stains = stains
        if self.params.threshold_od is not None:
            return
        values = []
        for window in windows:
            rgb, tissue = (window.rgb, window.tissue) if isinstance(window, CalibrationWindow) else (window, None)
            if not rgb.size:
                continue
            # Smoothed over the whole window, so tissue pixels next to glass get their real neighbourhood.
            smoothed = self._smoothed_hematoxylin(rgb, mpp)
            values.append(smoothed[tissue] if tissue is not None else smoothed.ravel())
        pixels = np.concatenate(values) if values else np.empty(0, np.float32)
        if pixels.size < 10_000:
            self.threshold_od = FALLBACK_THRESHOLD_OD * self.params.threshold_scale
            self.threshold_source = "fallback"
            log.warning(
                "Too little tissue to estimate the watershed threshold (%d px); using hematoxylin OD %.3f",
                pixels.size, self.threshold_od,
            )
            return
        self.threshold_od = round(estimate_threshold(pixels) * self.params.threshold_scale, 5)
        self.threshold_source = "min(otsu, triangle)"
        log.info("Watershed threshold: hematoxylin OD %.3f (estimated on %d px)", self.threshold_od, pixels.size)

    def describe(self) -> dict:
        """Return the parameters and calibration, for the output metadata."""
        return {
            "backend": self.name,
            "parameters": asdict(self.params),
            "threshold_od": self.threshold_od,
            "threshold_source": self.threshold_source,
        }

    def segment(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        """Return an int32 label image (0 = background) of the nuclei in ``rgb``.

        Parameters
        ----------
        rgb
            uint8 RGB image, H x W x 3.
        mpp
            Its pixel size in µm/px.
        """
        p = self.params
        smoothed = self._smoothed_hematoxylin(rgb, mpp)
        foreground = smoothed > self.threshold_od
        foreground = _fill_small_holes(foreground, p.max_hole_area_um2 / mpp**2)
        foreground = _remove_small_objects(foreground, p.min_area_um2 / mpp**2)
        if not foreground.any():
            return np.zeros(foreground.shape, dtype=np.int32)

        distance = ndi.distance_transform_edt(foreground).astype(np.float32) * np.float32(mpp)
        if p.split_sigma_um > 0:
            distance = ndi.gaussian_filter(distance, p.split_sigma_um / mpp)
        markers = _seed_markers(distance, foreground, p.split_h_um)
        labels = watershed(-distance, markers, mask=foreground)
        labels = self._split_at_higher_levels(labels, smoothed, mpp)
        if p.outline_fraction is not None:
            labels = self._place_outlines(labels, smoothed, mpp)
        return filter_label_areas(labels, p.min_area_um2 / mpp**2, p.max_area_um2 / mpp**2)

    def _split_at_higher_levels(self, labels: np.ndarray, smoothed: np.ndarray, mpp: float) -> np.ndarray:
        """Split nuclei that a higher threshold breaks into several nucleus-sized parts.

        At each factor of ``split_level_factors`` (ascending), the pixels of every
        current seed above factor x threshold are labelled per seed. A seed with two or
        more parts of at least ``min_area_um2`` is replaced by those parts. The final
        seeds then share out their nuclei by a watershed of the negated hematoxylin
        image, so a split follows the paler seam between two nuclei.
        """
        factors = sorted(self.params.split_level_factors)
        if not factors or labels.max() == 0:
            return labels
        min_px = self.params.min_area_um2 / mpp**2
        seeds = labels
        changed = False
        for factor in factors:
            # Labelling the seed ids keeps parts of different seeds apart where they touch.
            parts = label_regions(np.where(smoothed > factor * self.threshold_od, seeds, 0), connectivity=2)
            large = np.bincount(parts.ravel()) >= min_px
            large[0] = False
            seed_of_part = np.zeros(len(large), dtype=np.int64)
            seed_of_part[parts.ravel()] = seeds.ravel()
            split = np.bincount(seed_of_part[large], minlength=int(seeds.max()) + 1) >= 2
            split[0] = False
            if not split.any():
                continue
            new_parts = np.where(large[parts], parts + int(seeds.max()), 0)
            seeds = np.where(split[seeds], new_parts, seeds)
            changed = True
        if not changed:
            return labels
        relabelled, _, _ = relabel_sequential(seeds)
        return watershed(-smoothed, relabelled, mask=labels > 0)

    def _place_outlines(self, labels: np.ndarray, smoothed: np.ndarray, mpp: float) -> np.ndarray:
        """Re-threshold every nucleus at its own level and return the new label image.

        A nucleus's surrounding level is the mean of the smoothed hematoxylin over a
        ring from :data:`OUTLINE_RING_GAP_UM` to ``outline_ring_um`` outside it (pixels
        of other nuclei excluded), and its threshold is that level plus
        ``outline_fraction`` of its contrast, kept within
        :data:`OUTLINE_THRESHOLD_BOUNDS` times the slide's threshold. Each pixel within
        ``outline_reach_um`` of a nucleus is compared with the threshold of the nearest
        nucleus. The nuclei then take back the pixels above threshold by a watershed of
        the negated hematoxylin image from their remaining pixels, so touching nuclei
        keep a seam along the paler line between them.
        """
        p = self.params
        count = int(labels.max())
        if count == 0:
            return labels
        outside = labels == 0
        distance, (rows, cols) = ndi.distance_transform_edt(outside, return_indices=True)
        distance *= mpp
        nearest = labels[rows, cols]
        ring = outside & (distance > OUTLINE_RING_GAP_UM) & (distance <= p.outline_ring_um)

        values = smoothed.ravel().astype(np.float64)
        inside_px = np.maximum(np.bincount(labels.ravel(), minlength=count + 1), 1)
        inside_mean = np.bincount(labels.ravel(), weights=values, minlength=count + 1) / inside_px
        ring_ids = np.where(ring, nearest, 0).ravel()
        ring_px = np.bincount(ring_ids, minlength=count + 1)
        ring_mean = np.bincount(ring_ids, weights=values, minlength=count + 1) / np.maximum(ring_px, 1)
        # A nucleus with no free ring (packed in by others) is measured against 0,
        # the level of flat background after background subtraction.
        ring_mean = np.where(ring_px > 0, np.maximum(ring_mean, 0.0), 0.0)

        low, high = OUTLINE_THRESHOLD_BOUNDS
        own = ring_mean + p.outline_fraction * (inside_mean - ring_mean)
        own = np.clip(own, low * self.threshold_od, high * self.threshold_od).astype(np.float32)
        threshold = np.where(distance <= p.outline_reach_um, own[nearest], np.float32(np.inf))
        foreground = _fill_small_holes(smoothed > threshold, p.max_hole_area_um2 / mpp**2)
        return watershed(-smoothed, np.where(foreground, labels, 0), mask=foreground)

    def _smoothed_hematoxylin(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        p = self.params
        image = hematoxylin_od(rgb, self.stains)
        if p.background_radius_um > 0:
            size = 2 * max(1, round(p.background_radius_um / mpp)) + 1
            image -= ndi.grey_opening(image, size=(size, size))
        if p.smoothing_sigma_um > 0:
            image = ndi.gaussian_filter(image, p.smoothing_sigma_um / mpp)
        return image


def estimate_threshold(values: np.ndarray) -> float:
    """Return the smaller of the Otsu and triangle thresholds of smoothed hematoxylin OD values.

    Otsu's threshold is too high when nuclei cover little of the tissue (it splits
    stroma from everything else), the triangle threshold is too high when nuclei are
    dense (the histogram has no single dominant background peak). Each errs upwards
    in its weak case, so the smaller of the two is used.

    Values of 0 or less (flat background after background subtraction) are dropped
    first, and so are values above the :data:`THRESHOLD_CLIP_PERCENTILE` percentile,
    because a few pigment or ink pixels would stretch the histogram.

    When the most frequent of 256 histogram bins still lies at or below
    :data:`FLAT_BACKGROUND_OD`, nearly flat background (glass, or pale tissue without
    nuclei) dominates the histogram. Its spike just above 0 would become the triangle's
    peak and put the threshold at its foot, so values up to that OD are dropped too.
    """
    values = np.asarray(values, dtype=np.float32).ravel()
    values = values[values > 0]
    if values.size == 0:
        return FALLBACK_THRESHOLD_OD
    upper = np.percentile(values, THRESHOLD_CLIP_PERCENTILE)
    values = values[values <= upper]
    counts, edges = np.histogram(values, bins=256)
    if edges[np.argmax(counts)] <= FLAT_BACKGROUND_OD and (values > FLAT_BACKGROUND_OD).any():
        values = values[values > FLAT_BACKGROUND_OD]
    return float(min(threshold_otsu(values, nbins=256), threshold_triangle(values, nbins=256)))


def _seed_markers(distance: np.ndarray, foreground: np.ndarray, h: float) -> np.ndarray:
    """Label the h-maxima of ``distance`` inside each 8-connected foreground component.

    A component with a single local maximum (most nuclei) gets that maximum as its
    seed, which is what :func:`skimage.morphology.h_maxima` would return for it up to
    the seed's shape, and the watershed result is the same. Only components with
    several local maxima go through ``h_maxima``, on their own crop: this keeps its
    sort small (the full-tile call takes most of the segmentation time) and stops the
    smoothed distance of one component from seeding its neighbour.
    """
    eight = np.ones((3, 3), dtype=bool)
    components, count = ndi.label(foreground, structure=eight)
    if count == 0:
        return components
    inside = np.where(foreground, distance, np.float32(0))
    peaks = (ndi.maximum_filter(inside, size=3) == inside) & foreground
    peak_regions, peak_count = ndi.label(peaks, structure=eight)
    component_of_peak = np.zeros(peak_count + 1, dtype=np.int64)
    component_of_peak[peak_regions[peaks]] = components[peaks]
    peaks_per_component = np.bincount(component_of_peak[1:], minlength=count + 1)
    # A component's maximum lies on one of its peaks. Peaks are few pixels, so this is
    # much cheaper than ndi.maximum over the labelled image, which sorts every pixel.
    heights = np.zeros(count + 1, dtype=np.float64)
    np.maximum.at(heights, components[peaks], inside[peaks])

    single = (peaks_per_component == 1) & (heights >= h)
    seeds = peaks & single[components]
    height, width = foreground.shape
    boxes = ndi.find_objects(components)
    for index in np.flatnonzero(peaks_per_component > 1):
        box = boxes[index - 1]
        rows = slice(max(box[0].start - 1, 0), min(box[0].stop + 1, height))
        cols = slice(max(box[1].start - 1, 0), min(box[1].stop + 1, width))
        member = components[rows, cols] == index
        crop = np.where(member, inside[rows, cols], np.float32(0))
        seeds[rows, cols] |= h_maxima(crop, h).astype(bool) & member
    markers, _ = ndi.label(seeds, structure=eight)
    return markers


def _fill_small_holes(mask: np.ndarray, max_hole_px: float) -> np.ndarray:
    """Fill background components of at most ``max_hole_px`` pixels (4-connected)."""
    if max_hole_px < 1:
        return mask
    holes, count = ndi.label(~mask)
    if count == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    small = sizes <= max_hole_px
    small[0] = False
    return mask | small[holes]


def _remove_small_objects(mask: np.ndarray, min_px: float) -> np.ndarray:
    """Clear 8-connected foreground components smaller than ``min_px`` pixels."""
    components, count = ndi.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return mask
    sizes = np.bincount(components.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[components]
