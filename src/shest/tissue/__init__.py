"""Tissue detection on a slide thumbnail: masks, ink, regions of interest and polygons."""

from shest.tissue.color import InkParams
from shest.tissue.detect import TissueMask, TissueParams, detect_tissue
from shest.tissue.images import outline_image, save_mask_png, save_outline_png
from shest.tissue.polygons import mask_polygons, tissue_features, write_tissue_geojson
from shest.tissue.roi import load_roi, rasterize_roi
from shest.tissue.thumbnail import Thumbnail, choose_thumbnail_downsample, read_thumbnail

__all__ = [
    "InkParams",
    "Thumbnail",
    "TissueMask",
    "TissueParams",
    "choose_thumbnail_downsample",
    "detect_tissue",
    "load_roi",
    "mask_polygons",
    "outline_image",
    "rasterize_roi",
    "read_thumbnail",
    "save_mask_png",
    "save_outline_png",
    "tissue_features",
    "write_tissue_geojson",
]
