"""Tissue detection on a slide thumbnail.

The rule, applied to a thumbnail of about 8 µm/px:

1. Pieces of blue, green or black marker ink are set aside (:class:`InkParams`).
2. A pixel is tissue when its HSV saturation exceeds a threshold and its mean
   optical density exceeds ``od_min``. The saturation threshold is Otsu's threshold
   over the non-ink pixels, clipped to [``saturation_floor``, ``saturation_ceiling``]:
   the floor keeps a blank slide blank, and the ceiling keeps an image that is all
   tissue from being split in two.
3. Morphological closing joins fragments separated by less than ``closing_um``.
4. Background enclosed by tissue and smaller than ``max_hole_area_mm2`` is filled,
   then ink pixels are removed again (ink drawn over tissue hides it).
5. An optional region of interest restricts the mask; the mask of the whole slide
   is kept beside it for measurements of the glass.
6. Connected pieces smaller than ``min_tissue_area_mm2`` (dust, debris) are removed.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from skimage.morphology import disk

from shest.stain import optical_density
from shest.tissue.color import InkParams, hsv_planes, ink_mask
from shest.tissue.thumbnail import Thumbnail

log = logging.getLogger(__name__)

_BLOCK_ROWS = 512


@dataclass(frozen=True)
class TissueParams:
    """Parameters of the tissue rule (see the module docstring); areas in mm², lengths in µm."""

    saturation_floor: float = 0.05
    saturation_ceiling: float = 0.15
    od_min: float = 0.05
    closing_um: float = 16.0
    max_hole_area_mm2: float = 0.05
    min_tissue_area_mm2: float = 0.004
    ink: InkParams = field(default_factory=InkParams)

    def __post_init__(self) -> None:
        if not 0 <= self.saturation_floor <= self.saturation_ceiling <= 1:
            raise ValueError(
                "Saturation thresholds must satisfy 0 <= floor <= ceiling <= 1, "
                f"found {self.saturation_floor} and {self.saturation_ceiling}"
            )
        for name in ("od_min", "closing_um", "max_hole_area_mm2", "min_tissue_area_mm2"):
            if getattr(self, name) < 0:
                raise ValueError(f"Tissue parameter {name} must not be negative, found {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TissueMask:
    """Result of tissue detection on one thumbnail.

    ``mask`` and ``ink`` are restricted to the region of interest when one was
    given. ``slide_mask`` and ``slide_ink`` cover the whole slide either way, for
    measurements of the glass; without a region of interest they are the same arrays.
    """

    mask: np.ndarray
    ink: np.ndarray
    thumbnail: Thumbnail
    saturation_threshold: float
    otsu_threshold: float | None
    roi_applied: bool
    params: TissueParams
    slide_mask: np.ndarray | None = None
    slide_ink: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.slide_mask is None:
            self.slide_mask = self.mask
        if self.slide_ink is None:
            self.slide_ink = self.ink

    @property
    def area_mm2(self) -> float:
        """Tissue area on the glass in mm² (mask pixels times the pixel area)."""
        return float(self.mask.sum()) * self.thumbnail.pixel_area_mm2

    @property
    def fraction(self) -> float:
        """Fraction of the slide image covered by tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def ink_area_mm2(self) -> float:
        return float(self.ink.sum()) * self.thumbnail.pixel_area_mm2

    @property
    def is_empty(self) -> bool:
        return not bool(self.mask.any())


def detect_tissue(
    thumbnail: Thumbnail,
    params: TissueParams = TissueParams(),
    roi_mask: np.ndarray | None = None,
) -> TissueMask:
    """Detect tissue and marker ink on a thumbnail.

    Parameters
    ----------
    thumbnail
        The slide at low resolution (see :func:`shest.tissue.read_thumbnail`).
    params
        Thresholds and morphology sizes.
    roi_mask
        Optional boolean mask of the thumbnail's shape; tissue and ink outside it are dropped.

    Returns
    -------
    TissueMask
        The tissue and ink masks with the thresholds that produced them.
    """
    image = thumbnail.image
    shape = image.shape[:2]
    if roi_mask is not None and roi_mask.shape != shape:
        raise ValueError(f"ROI mask shape {roi_mask.shape} differs from the thumbnail's {shape}")

    pixel_area = thumbnail.pixel_area_mm2
    hsv = hsv_planes(image)
    ink = remove_small_objects(ink_mask(hsv, params.ink), params.ink.min_area_mm2 / pixel_area)
    mean_od = _mean_optical_density(image)

    candidates = hsv.saturation[~ink]
    otsu = _otsu_or_none(candidates)
    threshold = params.saturation_floor if otsu is None else otsu
    threshold = float(np.clip(threshold, params.saturation_floor, params.saturation_ceiling))
    mask = (hsv.saturation > threshold) & (mean_od > params.od_min) & ~ink
    del hsv, mean_od

    radius = round(params.closing_um / (2.0 * thumbnail.mpp))
    if radius >= 1:
        mask = _closing(mask, radius)
    mask = fill_small_holes(mask, params.max_hole_area_mm2 / pixel_area)
    # After closing and hole filling, so that ink drawn over tissue stays excluded.
    mask &= ~ink
    min_pixels = params.min_tissue_area_mm2 / pixel_area
    slide_mask = remove_small_objects(mask, min_pixels)
    slide_ink = ink
    if roi_mask is not None:
        mask = remove_small_objects(mask & roi_mask, min_pixels)
        ink = ink & roi_mask
    else:
        mask = slide_mask

    log.debug(
        "Tissue: saturation threshold %.3f (Otsu %s), closing radius %d px, %.3f mm²",
        threshold, "n/a" if otsu is None else f"{otsu:.3f}", radius, mask.sum() * pixel_area,
    )
    return TissueMask(
        mask=mask,
        ink=ink,
        thumbnail=thumbnail,
        saturation_threshold=threshold,
        otsu_threshold=otsu,
        roi_applied=roi_mask is not None,
        params=params,
        slide_mask=slide_mask,
        slide_ink=slide_ink,
    )


def _mean_optical_density(image: np.ndarray) -> np.ndarray:
    out = np.empty(image.shape[:2], dtype=np.float32)
    for start in range(0, image.shape[0], _BLOCK_ROWS):
        out[start : start + _BLOCK_ROWS] = optical_density(image[start : start + _BLOCK_ROWS]).mean(axis=-1)
    return out


def _otsu_or_none(values: np.ndarray) -> float | None:
    if values.size == 0 or float(values.max()) - float(values.min()) < 1e-6:
        return None
    return float(threshold_otsu(values))


def _closing(mask: np.ndarray, radius: int) -> np.ndarray:
    # Zero padding of one radius keeps the erosion step from eating tissue at the image edge.
    padded = np.pad(mask, radius)
    closed = ndi.binary_closing(padded, structure=disk(radius).astype(bool))
    return closed[radius:-radius, radius:-radius]


def fill_small_holes(mask: np.ndarray, max_pixels: float) -> np.ndarray:
    """Fill background regions enclosed by the mask whose size is at most ``max_pixels``.

    Background touching the image border is never a hole. Connectivity is 4 for
    background pieces, matching the 4-connected tissue outlines of
    :func:`shest.tissue.polygons.mask_polygons`.
    """
    if max_pixels <= 0 or mask.all() or not mask.any():
        return mask.copy()
    labels, count = ndi.label(~mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = sizes <= max_pixels
    fill[0] = False
    fill[border] = False
    return mask | fill[labels]


def remove_small_objects(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    """Remove 4-connected pieces of the mask smaller than ``min_pixels``."""
    if min_pixels <= 0 or not mask.any():
        return mask.copy()
    labels, count = ndi.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]
