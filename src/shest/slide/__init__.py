"""Whole-slide image reading: one interface over OpenSlide, tiffslide and Pillow."""

from shest.slide.mpp import MPP_MAX, MPP_MIN
from shest.slide.reader import Slide, open_slide

__all__ = ["MPP_MAX", "MPP_MIN", "Slide", "open_slide"]
