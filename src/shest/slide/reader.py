"""Open any supported slide and read regions in level-0 coordinates.

Backends, tried in this order:

- OpenSlide (``openslide-python`` with the ``openslide-bin`` wheel): SVS, NDPI, MRXS,
  SCN, BIF, VMS, generic tiled TIFF.
- tiffslide / tifffile: OME-TIFF and TIFF files that OpenSlide rejects (stripped
  TIFFs, OME series, SubIFD pyramids).
- Pillow: PNG and JPEG tiles, read whole because they are small by nature.

All coordinates given to and returned by :class:`Slide` are level-0 pixels of the
full image (x right, y down). Formats whose scanned area does not start at (0, 0),
such as MRXS, report that offset in :attr:`Slide.bounds`; reads are not shifted.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shest.errors import MppError, SlideError
from shest.slide.mpp import (
    PixelSize,
    PixelSizeCandidate,
    mpp_from_ome_xml,
    mpp_from_tiff_resolution,
    resolve_pixel_size,
)

log = logging.getLogger(__name__)

PILLOW_SUFFIXES = {".png", ".jpg", ".jpeg"}
TIFF_SUFFIXES = {".tif", ".tiff", ".svs", ".btf", ".tf2", ".tf8"}
# Refuse single reads above this many pixels (about 768 MiB as RGB): a caller that asks
# for more is about to load a whole level 0 and should read in tiles instead.
MAX_READ_PIXELS = 1 << 28
# Blocks of this many level pixels per side when building thumbnails piecewise.
THUMBNAIL_BLOCK = 4096
# A floating-point image whose largest value is at most this factor above 1 (or 255)
# is read as the range [0, 1] (or [0, 255]).
FLOAT_RANGE_SLACK = 1.5


@dataclass(frozen=True)
class Level:
    """One pyramid level: its size in pixels and its downsample relative to level 0."""

    width: int
    height: int
    downsample: float


@dataclass
class SlideMetadata:
    """What a backend reports about a slide, before the pixel size is resolved."""

    backend: str
    vendor: str | None
    levels: list[Level]
    objective_power: float | None
    bounds: tuple[int, int, int, int] | None
    associated_images: list[str]
    properties: dict[str, str]
    vendor_mpp: PixelSizeCandidate | None = None
    tiff_mpp: PixelSizeCandidate | None = None
    ome_mpp: PixelSizeCandidate | None = None
    background: tuple[int, int, int] = (255, 255, 255)
    extra: dict[str, Any] = field(default_factory=dict)


class Slide:
    """A whole-slide image or tile opened read-only through the best available backend.

    Use :func:`open_slide` to create one; it is a context manager that closes the
    underlying file handle.
    """

    def __init__(
        self, path: Path, handle: Any, meta: SlideMetadata, pixel_size: PixelSize | None, mpp_error: str | None = None
    ) -> None:
        self.path = path
        self._handle = handle
        self._meta = meta
        self._pixel_size = pixel_size
        self.mpp_error = mpp_error

    @property
    def pixel_size(self) -> PixelSize:
        """The resolved pixel size; raises MppError for a slide opened with ``require_mpp=False`` that has none."""
        if self._pixel_size is None:
            raise MppError(self.mpp_error or f"{self.path}: no pixel size (µm/px) available")
        return self._pixel_size

    # --- description -------------------------------------------------------------

    @property
    def backend(self) -> str:
        return self._meta.backend

    @property
    def vendor(self) -> str | None:
        return self._meta.vendor

    @property
    def levels(self) -> list[Level]:
        return list(self._meta.levels)

    @property
    def level_count(self) -> int:
        return len(self._meta.levels)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 size as (width, height) in pixels."""
        level = self._meta.levels[0]
        return level.width, level.height

    @property
    def mpp_x(self) -> float:
        return self.pixel_size.x

    @property
    def mpp_y(self) -> float:
        return self.pixel_size.y

    @property
    def mpp(self) -> float:
        """Mean of the x and y pixel sizes in µm/px; the two differ by under 1 % on real scanners."""
        return self.pixel_size.mean

    def metadata_pixel_size(self) -> PixelSize | None:
        """Return the pixel size the file's own metadata gives, ignoring any --mpp override.

        None when the metadata has no usable value. QC compares this with an override
        to catch a mistyped --mpp.
        """
        meta = self._meta
        try:
            return resolve_pixel_size(self.path, None, meta.vendor_mpp, meta.tiff_mpp, meta.ome_mpp)
        except MppError:
            return None

    @property
    def objective_power(self) -> float | None:
        return self._meta.objective_power

    @property
    def bounds(self) -> tuple[int, int, int, int] | None:
        """Scanned area as (x, y, width, height) in level-0 pixels, when the format records one."""
        return self._meta.bounds

    @property
    def associated_images(self) -> list[str]:
        return list(self._meta.associated_images)

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._meta.properties)

    def info(self) -> dict[str, Any]:
        """Return a JSON-serialisable description of the slide (what ``shest inspect`` prints)."""
        width, height = self.dimensions
        known = self._pixel_size is not None
        return {
            "path": str(self.path),
            "file_size_bytes": self.path.stat().st_size if self.path.is_file() else None,
            "backend": self.backend,
            "vendor": self.vendor,
            "width": width,
            "height": height,
            "level_count": self.level_count,
            "levels": [
                {"level": i, "width": lv.width, "height": lv.height, "downsample": round(lv.downsample, 4)}
                for i, lv in enumerate(self._meta.levels)
            ],
            "mpp_x": self.mpp_x if known else None,
            "mpp_y": self.mpp_y if known else None,
            "mpp_source": self.pixel_size.source if known else None,
            "mpp_error": None if known else self.mpp_error,
            "objective_power": self.objective_power,
            "bounds": dict(zip(("x", "y", "width", "height"), self.bounds)) if self.bounds else None,
            "associated_images": self.associated_images,
            "area_mm2": width * height * self.mpp_x * self.mpp_y / 1e6 if known else None,
        }

    # --- reading -----------------------------------------------------------------

    def best_level_for_downsample(self, downsample: float) -> int:
        """Return the deepest level whose downsample does not exceed ``downsample`` (1 % slack)."""
        best = 0
        for index, level in enumerate(self._meta.levels):
            if level.downsample <= downsample * 1.01:
                best = index
        return best

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read an RGB region as a (height, width, 3) uint8 array.

        Parameters
        ----------
        location
            Top-left corner (x, y) in level-0 pixels.
        level
            Pyramid level to read from.
        size
            (width, height) in pixels of that level.

        Parts of the region outside the image are filled with the slide's background
        colour (white unless the format records another), and transparent pixels are
        composited onto it.
        """
        if not 0 <= level < self.level_count:
            raise ValueError(f"Level {level} does not exist in {self.path}: it has levels 0-{self.level_count - 1}")
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            raise ValueError(f"Region size must be positive, found {width} x {height}")
        if width * height > MAX_READ_PIXELS:
            raise ValueError(
                f"Refusing to read {width} x {height} px from {self.path} in one call "
                f"(limit {MAX_READ_PIXELS} px); read it in tiles or at a lower level."
            )
        lv = self._meta.levels[level]
        x0, y0 = int(location[0]), int(location[1])
        # The requested box in this level's pixel grid.
        lx0 = math.floor(x0 / lv.downsample)
        ly0 = math.floor(y0 / lv.downsample)
        out = np.empty((height, width, 3), dtype=np.uint8)
        out[:] = self._meta.background
        ix0, iy0 = max(lx0, 0), max(ly0, 0)
        ix1, iy1 = min(lx0 + width, lv.width), min(ly0 + height, lv.height)
        if ix1 <= ix0 or iy1 <= iy0:
            return out
        loc0 = (round(ix0 * lv.downsample), round(iy0 * lv.downsample))
        if ix0 == lx0:
            loc0 = (x0, loc0[1])
        if iy0 == ly0:
            loc0 = (loc0[0], y0)
        try:
            patch = self._read(loc0, level, (ix1 - ix0, iy1 - iy0))
        except Exception as exc:  # noqa: BLE001 - every backend raises its own types
            raise SlideError(
                f"Failed to read region x={x0}, y={y0}, {width} x {height} px at level {level} "
                f"of {self.path}: {exc}. The file may be truncated or corrupt; re-copy or re-export it."
            ) from exc
        out[iy0 - ly0 : iy1 - ly0, ix0 - lx0 : ix1 - lx0] = patch
        return out

    def read_region_at_mpp(
        self, box: tuple[int, int, int, int], target_mpp: float
    ) -> tuple[np.ndarray, float]:
        """Read a level-0 box (x, y, width, height) resampled to ``target_mpp`` µm/px.

        Reads from the deepest level that is still at least as fine as the target and
        resizes with area averaging. Returns the image and its scale factor: output
        pixels per level-0 pixel.
        """
        x, y, width, height = box
        downsample = max(target_mpp / self.mpp, 1e-9)
        level = self.best_level_for_downsample(downsample)
        level_ds = self._meta.levels[level].downsample
        read_w = max(1, math.ceil(width / level_ds))
        read_h = max(1, math.ceil(height / level_ds))
        image = self.read_region((x, y), level, (read_w, read_h))
        out_w = max(1, round(width / downsample))
        out_h = max(1, round(height / downsample))
        if (out_w, out_h) != (read_w, read_h):
            image = np.asarray(Image.fromarray(image).resize((out_w, out_h), Image.Resampling.BOX))
        return image, out_w / width

    def thumbnail(self, downsample: float) -> np.ndarray:
        """Return the whole slide at ``downsample`` (level-0 pixels per thumbnail pixel).

        The image is assembled block by block from the deepest suitable level, so the
        peak memory is the thumbnail plus one block, whatever the size of level 0.
        """
        if downsample < 1:
            raise ValueError(f"Thumbnail downsample must be at least 1, found {downsample}")
        width0, height0 = self.dimensions
        out_w = max(1, round(width0 / downsample))
        out_h = max(1, round(height0 / downsample))
        level = self.best_level_for_downsample(downsample)
        lv = self._meta.levels[level]
        thumb = Image.new("RGB", (out_w, out_h), self._meta.background)
        block = THUMBNAIL_BLOCK
        for ly in range(0, lv.height, block):
            for lx in range(0, lv.width, block):
                bw, bh = min(block, lv.width - lx), min(block, lv.height - ly)
                # ceil, not round: read_region floors x0 / downsample back to lx, and a
                # rounded-down x0 would land one level pixel early at non-integer downsamples.
                x0, y0 = math.ceil(lx * lv.downsample), math.ceil(ly * lv.downsample)
                patch = self.read_region((x0, y0), level, (bw, bh))
                tx0, ty0 = round(x0 / downsample), round(y0 / downsample)
                tx1 = round((lx + bw) * lv.downsample / downsample)
                ty1 = round((ly + bh) * lv.downsample / downsample)
                tx1, ty1 = min(max(tx1, tx0 + 1), out_w), min(max(ty1, ty0 + 1), out_h)
                if tx1 <= tx0 or ty1 <= ty0:
                    continue
                piece = Image.fromarray(patch).resize((tx1 - tx0, ty1 - ty0), Image.Resampling.BOX)
                thumb.paste(piece, (tx0, ty0))
        return np.asarray(thumb)

    def thumbnail_downsample(self, max_side: int) -> float:
        """Return the downsample that makes the longer side of the thumbnail at most ``max_side``."""
        return max(1.0, max(self.dimensions) / float(max_side))

    def associated_image(self, name: str) -> np.ndarray:
        """Return an associated image (label, macro, thumbnail) as an RGB array."""
        if name not in self._meta.associated_images:
            raise KeyError(f"{self.path} has no associated image {name!r}; it has {self.associated_images}")
        image = self._handle.associated_images[name]
        return np.asarray(image.convert("RGB"))

    # --- backend dispatch ------------------------------------------------------------

    def _read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        backend = self._meta.backend
        if backend == "openslide":
            region = self._handle.read_region(location, level, size)
            return _composite_rgba(np.asarray(region), self._meta.background)
        if backend == "tiffslide":
            region = self._handle.read_region(location, level, size, as_array=True)
            region = np.asarray(region)
            if region.dtype != np.uint8:
                alpha = region[..., 3:4] if region.ndim == 3 and region.shape[2] == 4 else None
                region = _to_uint8_rgb(region[..., :3] if region.ndim == 3 else region)
                if alpha is not None:
                    region = np.concatenate([region, _to_uint8_rgb(alpha)[..., :1]], axis=2)
            if region.ndim == 2:
                region = np.repeat(region[..., None], 3, axis=2)
            if region.shape[2] == 4:
                return _composite_rgba(region, self._meta.background)
            return np.ascontiguousarray(region[..., :3])
        if backend == "pillow":
            x, y = location
            w, h = size
            return self._handle[y : y + h, x : x + w]
        raise AssertionError(f"unknown backend {backend}")

    def close(self) -> None:
        if hasattr(self._handle, "close"):
            self._handle.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        width, height = self.dimensions
        pixel = f"{self.mpp:.4f} µm/px" if self._pixel_size is not None else "no µm/px"
        return f"Slide({self.path.name!r}, {width}x{height}, {pixel}, backend={self.backend})"


def open_slide(
    path: str | os.PathLike,
    mpp: float | None = None,
    require_mpp: bool = True,
    recorded_mpp: float | None = None,
) -> Slide:
    """Open a slide and resolve its pixel size.

    Parameters
    ----------
    path
        Slide file (for MRXS, the ``.mrxs`` file beside its data folder).
    mpp
        µm/px override; takes precedence over anything in the file.
    require_mpp
        With False, a slide without a usable pixel size still opens (for describing
        it); its ``mpp`` properties then raise MppError and ``mpp_error`` holds the
        message.
    recorded_mpp
        µm/px that an earlier stage recorded for this slide (tile plan, cell table),
        used only when neither ``mpp`` nor the file gives one; the choice is logged.

    Raises
    ------
    SlideError
        The file is missing, not a slide, truncated, or in an unsupported format.
    MppError
        No pixel size is available, or it is outside 0.05-2.0 µm/px.
    """
    path = Path(path)
    if not path.exists():
        raise SlideError(f"Slide file not found: {path}. Check the path (and the samplesheet 'wsi' column).")
    if path.is_dir():
        raise SlideError(f"{path} is a folder, not a slide file. For MRXS slides give the .mrxs file.")
    if path.stat().st_size == 0:
        raise SlideError(f"Slide file {path} is empty (0 bytes); the copy or download is incomplete.")

    problem = _tiff_integrity_problem(path)
    if problem:
        raise SlideError(f"{path} is truncated or corrupt: {problem}. Re-copy or re-export the slide.")

    suffix = path.suffix.lower()
    name = path.name.lower()
    attempts: list[str] = []
    if suffix in PILLOW_SUFFIXES:
        openers = [_open_pillow]
    elif name.endswith((".ome.tif", ".ome.tiff")):
        openers = [_open_tiffslide, _open_openslide]
    else:
        openers = [_open_openslide, _open_tiffslide, _open_pillow]

    for opener in openers:
        try:
            handle, meta = opener(path)
        except _Unsupported as exc:
            attempts.append(str(exc))
            continue
        try:
            pixel_size = resolve_pixel_size(path, mpp, meta.vendor_mpp, meta.tiff_mpp, meta.ome_mpp, recorded_mpp)
        except MppError as exc:
            if not require_mpp:
                return Slide(path, handle, meta, None, mpp_error=str(exc))
            if hasattr(handle, "close"):
                handle.close()
            raise
        slide = Slide(path, handle, meta, pixel_size)
        if pixel_size.source == "recorded":
            log.info("%s records no µm/px; using the %.4f µm/px recorded by an earlier stage", path.name, pixel_size.x)
        log.debug("Opened %r (mpp from %s)", slide, pixel_size.source)
        return slide

    raise SlideError(
        f"{path} could not be opened as a slide: {'; '.join(attempts)}. "
        "Supported formats: SVS, NDPI, MRXS, SCN, BIF, VMS, tiled TIFF, OME-TIFF, PNG and JPEG. "
        "If the file is one of these, it may be truncated or corrupt: re-copy or re-export it."
    )


class _Unsupported(Exception):
    """A backend cannot read this file; the next backend may."""


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# tifffile log messages (tifffile 2026.3) about directory offsets past the end of the file.
_TRUNCATION_MESSAGES = ("invalid offset to first page", "invalid page offset", "invalid offset to page", "invalid next page")


class _MessageCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _tiff_integrity_problem(path: Path) -> str | None:
    """Return why a TIFF-family file is incomplete, or None when every page and its data are present.

    OpenSlide rejects a TIFF whose later directories are cut off, but tifffile (and so
    tiffslide) opens the pages before the cut and logs a warning, which would let a
    truncated copy pass as a smaller slide. Files that are not TIFF, and TIFFs that
    tifffile cannot parse (the slide backends may still read them), return None.

    NOTE: tested on SVS, OME-TIFF and tifffile-written TIFFs; NDPI, SCN, BIF and
    Philips TIFF go through the same check without a test file here.
    """
    with open(path, "rb") as handle:
        if handle.read(4) not in _TIFF_MAGIC:
            return None
    import tifffile

    size = path.stat().st_size
    tifffile_log = logging.getLogger("tifffile")
    collector = _MessageCollector()
    saved = tifffile_log.level, tifffile_log.propagate
    tifffile_log.addHandler(collector)
    tifffile_log.setLevel(logging.WARNING)
    tifffile_log.propagate = False
    try:
        with tifffile.TiffFile(path) as tif:
            pages = list(tif.pages)
            for series in tif.series:
                for level in series.levels:
                    pages.extend(page for page in level.pages if page is not None)
            for page in pages:
                offsets = np.asarray(getattr(page, "dataoffsets", ()), dtype=np.uint64)
                counts = np.asarray(getattr(page, "databytecounts", ()), dtype=np.uint64)
                if offsets.size and counts.size == offsets.size:
                    end = int((offsets + counts).max())
                    if end > size:
                        return f"the image data of TIFF page {page.index} ends at byte {end}, but the file has {size} bytes"
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types on damaged input
        log.debug("%s: tifffile cannot check the TIFF structure: %s", path, exc)
        return None
    finally:
        tifffile_log.removeHandler(collector)
        tifffile_log.setLevel(saved[0])
        tifffile_log.propagate = saved[1]
    # tifffile prefixes its messages with the repr of the object that logged them.
    invalid = [
        re.sub(r"^<[^>]*>\s*", "", message)
        for message in collector.messages
        if any(text in message for text in _TRUNCATION_MESSAGES)
    ]
    if invalid:
        return f"tifffile reports '{invalid[0]}' (the file has {size} bytes)"
    return None


def _composite_rgba(region: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Composite a (pre-multiplied or straight) RGBA array onto an opaque background."""
    if region.shape[2] == 3:
        return region
    alpha = region[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(region[..., :3])
    rgb = region[..., :3].astype(np.float32)
    a = alpha.astype(np.float32) / 255.0
    bg = np.asarray(background, dtype=np.float32)
    # OpenSlide returns premultiplied ARGB: fully transparent pixels have RGB 0.
    out = rgb + bg * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _float_or_none(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) and result > 0 else None


def _open_openslide(path: Path):
    import openslide

    try:
        handle = openslide.OpenSlide(str(path))
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise _Unsupported(f"OpenSlide: unsupported format ({exc})") from exc
    except openslide.OpenSlideError as exc:
        raise _Unsupported(f"OpenSlide: {exc}") from exc

    props = dict(handle.properties)
    vendor = props.get(openslide.PROPERTY_NAME_VENDOR)
    if vendor == "generic-tiff" and handle.level_count == 1 and _has_subifds(path):
        # OpenSlide does not read SubIFD pyramids (tifffile's default layout); without
        # this, thumbnails of such files would be built from level 0.
        handle.close()
        raise _Unsupported("OpenSlide: ignores the SubIFD pyramid of this TIFF")
    levels = [
        Level(int(w), int(h), float(ds))
        for (w, h), ds in zip(handle.level_dimensions, handle.level_downsamples)
    ]
    mpp_x = _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_X))
    mpp_y = _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_Y))
    vendor_mpp = tiff_mpp = None
    if mpp_x and mpp_y:
        if vendor == "generic-tiff":
            # OpenSlide derives generic-TIFF mpp from the TIFF resolution tags.
            tiff_mpp = PixelSizeCandidate(mpp_x, mpp_y, "tiff-resolution", "TIFF XResolution/YResolution")
        else:
            vendor_mpp = PixelSizeCandidate(mpp_x, mpp_y, "vendor", f"{vendor} metadata")
    bounds = None
    if props.get(openslide.PROPERTY_NAME_BOUNDS_X) is not None:
        bounds = (
            int(props.get(openslide.PROPERTY_NAME_BOUNDS_X, 0)),
            int(props.get(openslide.PROPERTY_NAME_BOUNDS_Y, 0)),
            int(props.get(openslide.PROPERTY_NAME_BOUNDS_WIDTH, levels[0].width)),
            int(props.get(openslide.PROPERTY_NAME_BOUNDS_HEIGHT, levels[0].height)),
        )
    background = (255, 255, 255)
    color = props.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR)
    if color and len(color) == 6:
        background = tuple(int(color[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[assignment]
    meta = SlideMetadata(
        backend="openslide",
        vendor=vendor,
        levels=levels,
        objective_power=_float_or_none(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)),
        bounds=bounds,
        associated_images=sorted(handle.associated_images),
        properties=props,
        vendor_mpp=vendor_mpp,
        tiff_mpp=tiff_mpp,
        background=background,
    )
    return handle, meta


def _has_subifds(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return bool(tif.pages[0].subifds)
    except Exception:  # noqa: BLE001 - any failure means "no usable SubIFDs"
        return False


def _open_tiffslide(path: Path):
    import tifffile
    import tiffslide

    try:
        handle = tiffslide.TiffSlide(str(path))
        _ = handle.level_dimensions
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types on non-TIFF input
        raise _Unsupported(f"tiffslide: {type(exc).__name__}: {exc}") from exc

    props = {key: str(value) for key, value in handle.properties.items() if value is not None}
    vendor = handle.properties.get("tiffslide.vendor")
    levels = [
        Level(int(w), int(h), float(ds))
        for (w, h), ds in zip(handle.level_dimensions, handle.level_downsamples)
    ]
    vendor_mpp = tiff_mpp = ome_mpp = None
    if vendor:
        mpp_x = _float_or_none(handle.properties.get("tiffslide.mpp-x"))
        mpp_y = _float_or_none(handle.properties.get("tiffslide.mpp-y"))
        if mpp_x and mpp_y:
            vendor_mpp = PixelSizeCandidate(mpp_x, mpp_y, "vendor", f"{vendor} metadata")
    try:
        with tifffile.TiffFile(str(path)) as tif:
            page = tif.pages[0]
            unit = page.tags.get("ResolutionUnit")
            x_res = page.tags.get("XResolution")
            y_res = page.tags.get("YResolution")
            if x_res is not None and y_res is not None and unit is not None:
                tiff_mpp = mpp_from_tiff_resolution(
                    x_res.value, y_res.value, int(unit.value), "TIFF XResolution/YResolution"
                )
            if tif.is_ome:
                ome_mpp = mpp_from_ome_xml(tif.ome_metadata)
    except Exception as exc:  # noqa: BLE001
        log.debug("%s: could not read TIFF resolution tags: %s", path, exc)

    objective = _float_or_none(handle.properties.get("tiffslide.objective-power"))
    meta = SlideMetadata(
        backend="tiffslide",
        vendor=vendor,
        levels=levels,
        objective_power=objective,
        bounds=None,
        associated_images=sorted(handle.associated_images),
        properties=props,
        vendor_mpp=vendor_mpp,
        tiff_mpp=tiff_mpp,
        ome_mpp=ome_mpp,
    )
    return handle, meta


def _pillow_to_rgb(image: Image.Image) -> np.ndarray:
    """Convert any Pillow image to 8-bit RGB, compositing transparency onto white.

    Transparent pixels (RGBA, LA, or a palette with a transparent entry) become white
    background, as OpenSlide renders them. 16- and 32-bit greyscale is scaled to the
    8-bit range by its dtype's maximum rather than clipped.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image)
        return _to_uint8_rgb(values)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _to_uint8_rgb(values: np.ndarray) -> np.ndarray:
    """Scale an integer or floating-point image to 8-bit RGB (greyscale is repeated)."""
    if values.dtype == np.uint8:
        scaled = values
    elif np.issubdtype(values.dtype, np.integer):
        scaled = (values.astype(np.float64) * (255.0 / np.iinfo(values.dtype).max) + 0.5).astype(np.uint8)
    else:
        finite = np.nan_to_num(values.astype(np.float64), nan=1.0, posinf=1.0, neginf=0.0)
        # Floating-point images are taken to be in [0, 1], [0, 255] or [0, 65535]: the
        # smallest range that the largest value does not clearly exceed. Colour
        # conversions leave values slightly above 1, and scaling those by 255 would
        # turn the whole image black.
        largest = finite.max(initial=0.0)
        peak = next((top for top in (1.0, 255.0) if largest <= top * FLOAT_RANGE_SLACK), 65535.0)
        scaled = (np.clip(finite / peak, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if scaled.ndim == 2:
        scaled = np.repeat(scaled[..., None], 3, axis=2)
    elif scaled.shape[2] == 1:
        scaled = np.repeat(scaled, 3, axis=2)
    return np.ascontiguousarray(scaled)


def _open_pillow(path: Path):
    from PIL import UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            info = dict(image.info)
            rgb = _pillow_to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise _Unsupported(f"Pillow: {exc}") from exc
    except Image.DecompressionBombError as exc:
        raise _Unsupported(f"Pillow: image too large to read whole ({exc}); convert it to a tiled TIFF") from exc

    tiff_mpp = None
    dpi = info.get("dpi")
    if dpi and len(dpi) == 2:
        tiff_mpp = mpp_from_tiff_resolution(dpi[0], dpi[1], 2, "image DPI")
    height, width = rgb.shape[:2]
    meta = SlideMetadata(
        backend="pillow",
        vendor=None,
        levels=[Level(width, height, 1.0)],
        objective_power=None,
        bounds=None,
        associated_images=[],
        properties={f"pillow.{k}": str(v) for k, v in info.items() if isinstance(v, (str, int, float, tuple))},
        tiff_mpp=tiff_mpp,
    )
    return rgb, meta
