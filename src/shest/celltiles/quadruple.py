"""The SHEST quadruple tile: four 112 x 112 panes of one nucleus, assembled to 224 x 224.

Layout (rows, columns)::

    +----------------------+------------------------------+
    | RGB window           | RGB window x nucleus mask    |
    +----------------------+------------------------------+
    | hematoxylin image    | hematoxylin x nucleus mask   |
    +----------------------+------------------------------+

Each step reproduces the training code of recognizability/shest, because the released
heads were fitted to exactly these pixels. Resizing is bilinear as
``torch.nn.functional.interpolate`` does it (``align_corners=False``, no
antialiasing). The outline is rasterised pixel for pixel as ``skimage.draw.polygon2mask``
rasterises it. The hematoxylin image is that of ``rgb2hed`` and ``hed2rgb`` on the
resized window truncated to uint8. Last come scaling to 0-1 and the H-optimus-0
normalisation. Both are computed for a whole batch at once (see
:func:`rasterise_masks` and :func:`hematoxylin_uint8`), and
``tests/test_celltiles.py`` checks every step against a cell-by-cell implementation
that calls scikit-image and torch directly.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import hed_from_rgb, rgb_from_hed
from skimage.util import img_as_float64

from shest.celltiles.geometry import HOPTIMUS_MEAN, HOPTIMUS_STD, PANE_PX


def outline_to_pane(ring_xy: np.ndarray, x0: int, y0: int, upper: int, pane_px: int = PANE_PX) -> np.ndarray:
    """Map an outline from level-0 (x, y) pixels into (row, column) vertices of a pane.

    ``(x0, y0)`` is the window's top-left corner; vertices are scaled by
    ``pane_px / upper`` and rounded half to even, as Python's ``round`` does.
    """
    ring_xy = np.asarray(ring_xy, dtype=np.float64)
    rows = np.rint(pane_px * (ring_xy[:, 1] - y0) / upper)
    cols = np.rint(pane_px * (ring_xy[:, 0] - x0) / upper)
    return np.stack([rows, cols], axis=1).astype(np.int64)


def rasterise_masks(vertices: Sequence[np.ndarray], pane_px: int = PANE_PX) -> np.ndarray:
    """Rasterise (row, column) polygons with integer vertices into a (N, pane, pane) boolean array.

    Pixels are filled as ``skimage.draw.polygon2mask`` (scikit-image 0.26) fills them:
    a pixel centre is set when it lies inside the polygon, on an edge or on a vertex,
    by O'Rourke's crossing test. Parts outside the pane are dropped. All polygons of a
    batch are rasterised together. With integer vertices every comparison of that test
    can be made in integer arithmetic, so the result is the same pixel for pixel.
    """
    n_polygons = len(vertices)
    masks = np.zeros((n_polygons, pane_px, pane_px), dtype=bool)
    if n_polygons == 0:
        return masks
    counts = np.array([len(rc) for rc in vertices], dtype=np.int64)
    if np.any(counts == 0):
        raise ValueError("Every outline needs at least one vertex")
    rc = np.concatenate([np.asarray(rc, dtype=np.int64).reshape(-1, 2) for rc in vertices])
    owner = np.repeat(np.arange(n_polygons), counts)

    inside = _crossing_parity(rc, owner, counts, pane_px, upward=True)
    inside |= _crossing_parity(rc, owner, counts, pane_px, upward=False)
    masks[:] = inside.reshape(n_polygons, pane_px, pane_px)

    on_pane = (rc[:, 0] >= 0) & (rc[:, 0] < pane_px) & (rc[:, 1] >= 0) & (rc[:, 1] < pane_px)
    masks[owner[on_pane], rc[on_pane, 0], rc[on_pane, 1]] = True
    return masks


def _crossing_parity(rc: np.ndarray, owner: np.ndarray, counts: np.ndarray, pane_px: int, upward: bool) -> np.ndarray:
    """Return, per polygon row and column, whether the ray from the pixel centre crosses an odd number of edges.

    With ``upward``, the edges counted straddle the pixel's row with one end strictly
    below it (greater row index), and they cross to the right of the pixel. Otherwise
    they have one end strictly above the row and cross to its left. The result has
    shape (n_polygons * pane_px, pane_px).
    """
    n_polygons = counts.size
    # Edge e runs from the previous vertex (r1, c1) to vertex e (r0, c0), closing each ring.
    starts = np.cumsum(counts) - counts
    previous = np.arange(rc.shape[0]) - 1
    previous[starts] = starts + counts - 1
    r0, c0 = rc[:, 0], rc[:, 1]
    r1, c1 = rc[previous, 0], rc[previous, 1]

    # An edge straddles rows [low, high - 1] under the "upward" rule ((r0 > y) != (r1 > y))
    # and rows [low + 1, high] under the other ((r0 < y) != (r1 < y)).
    low = np.minimum(r0, r1) + (0 if upward else 1)
    span = np.abs(r0 - r1)
    edge = np.repeat(np.arange(r0.size), span)
    y = low[edge] + np.arange(edge.size) - np.repeat(np.cumsum(span) - span, span)
    on_pane = (y >= 0) & (y < pane_px)
    edge, y = edge[on_pane], y[on_pane]

    # The edge meets row y at column numerator / height (height > 0).
    height = r0[edge] - r1[edge]
    numerator = c1[edge] * height + (y - r1[edge]) * (c0[edge] - c1[edge])
    flip = height < 0
    height = np.where(flip, -height, height)
    numerator = np.where(flip, -numerator, numerator)
    if upward:
        # Crossing to the right of column x when x < numerator / height: the parity
        # changes after the last such column.
        toggle = np.floor_divide(numerator - 1, height) + 1
    else:
        # Crossing to the left of column x when x > numerator / height.
        toggle = np.floor_divide(numerator, height) + 1
    toggle = np.clip(toggle, 0, pane_px)

    # Every row of a closed ring is straddled by an even number of edges, so the
    # running parity over the flattened rows returns to zero at the end of each row.
    bins = pane_px + 1
    index = (owner[edge] * pane_px + y) * bins + toggle
    histogram = np.bincount(index, minlength=n_polygons * pane_px * bins).astype(np.uint8)
    parity = np.cumsum(histogram, dtype=np.uint8) & 1
    return parity.reshape(n_polygons * pane_px, bins)[:, :pane_px].astype(bool)


def resize_windows(windows: np.ndarray | torch.Tensor, pane_px: int = PANE_PX) -> torch.Tensor:
    """Resize (N, h, w, 3) uint8 windows to (N, 3, pane, pane) float32, bilinear without antialiasing.

    Each channel is resized as a separate one-channel image. PyTorch (2.x) picks
    another bilinear kernel for three-channel images when it runs on one thread, and
    the two kernels differ in the last bit of about a third of the values. With one
    channel it always takes the kernel that three-channel images get on several
    threads, as in the SHEST training code, so tile workers on one thread give the
    same tiles.
    """
    batch = torch.as_tensor(windows).permute(0, 3, 1, 2).contiguous().float()
    n, channels, height, width = batch.shape
    planes = batch.reshape(n * channels, 1, height, width)
    resized = F.interpolate(planes, size=(pane_px, pane_px), mode="bilinear", align_corners=False)
    return resized.reshape(n, channels, pane_px, pane_px)


@functools.cache
def _optical_density_table() -> np.ndarray:
    """Return ``log(max(v / 255, 1e-6)) / log(1e-6)`` for v = 0..255, computed as ``rgb2hed`` computes it."""
    values = img_as_float64(np.arange(256, dtype=np.uint8))
    np.maximum(values, 1e-6, out=values)
    return np.log(values) / np.log(1e-6)


def hematoxylin_uint8(resized: torch.Tensor) -> np.ndarray:
    """Return the hematoxylin-only image of resized windows as (N, 3, pane, pane) uint8.

    Each value equals ``(hed2rgb(hed) * 255).astype(uint8)``, where ``hed`` is
    ``rgb2hed`` of the resized window truncated to uint8 with its eosin and DAB
    channels set to zero (scikit-image 0.26). The steps are those of scikit-image,
    with two shortcuts that change no bit. The optical density of each of the 256
    channel values is looked up instead of recomputed. With eosin and DAB at zero,
    the recombination reduces to one product per channel, because the other two
    terms are signed zeros. Cells are converted one at a time, which keeps the
    float64 intermediates in the CPU cache.
    """
    rgb = resized.permute(0, 2, 3, 1).numpy().astype(np.uint8)
    n, pane, _, channels = rgb.shape
    density = _optical_density_table()
    log_adjust = -np.log(1e-6)
    hematoxylin_rgb = rgb_from_hed[0]
    out = np.empty((n, channels, pane, pane), dtype=np.uint8)
    for index in range(n):
        stains = density[rgb[index]] @ hed_from_rgb
        log_rgb = -(np.maximum(stains[..., 0], 0) * log_adjust)
        for channel in range(channels):
            out[index, channel] = (np.exp(log_rgb * hematoxylin_rgb[channel]) * 255).astype(np.uint8)
    return out


def hematoxylin_panes(resized: torch.Tensor) -> torch.Tensor:
    """Return the hematoxylin-only image of resized windows, (N, 3, pane, pane) float32 in 0-255.

    The resized window is truncated to uint8, separated with ``rgb2hed``, its eosin
    and DAB channels set to zero, recombined with ``hed2rgb``, scaled by 255 and
    truncated to uint8 again (see :func:`hematoxylin_uint8`).
    """
    return torch.from_numpy(hematoxylin_uint8(resized)).float()


def assemble_tiles(
    rgb: torch.Tensor,
    hematoxylin: torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Assemble (N, 3, 2 * pane, 2 * pane) tiles from the RGB and hematoxylin panes and masks.

    The tiles are built on the device of ``rgb``, into ``out`` when it is given.
    """
    device = rgb.device
    mask = torch.as_tensor(masks, device=device).unsqueeze(1).to(rgb.dtype)
    hematoxylin = torch.as_tensor(hematoxylin, device=device).to(rgb.dtype)
    n, channels, pane, _ = rgb.shape
    shape = (n, channels, 2 * pane, 2 * pane)
    if out is None:
        tiles = torch.empty(shape, dtype=rgb.dtype, device=device)
    elif tuple(out.shape) != shape or out.dtype != rgb.dtype or out.device != device:
        raise ValueError(f"The output tensor must be {rgb.dtype} of shape {shape} on {device}, found {out.dtype} "
                         f"{tuple(out.shape)} on {out.device}")  # fmt: skip
    else:
        tiles = out
    tiles[:, :, :pane, :pane] = rgb
    torch.mul(rgb, mask, out=tiles[:, :, :pane, pane:])
    tiles[:, :, pane:, :pane] = hematoxylin
    torch.mul(hematoxylin, mask, out=tiles[:, :, pane:, pane:])
    return tiles


def normalise_tiles(
    tiles: torch.Tensor,
    mean: Sequence[float] = HOPTIMUS_MEAN,
    std: Sequence[float] = HOPTIMUS_STD,
) -> torch.Tensor:
    """Scale 0-255 tiles to 0-1 and apply a per-channel mean and std (H-optimus-0's by default), in place."""
    mean = torch.tensor(mean, dtype=tiles.dtype, device=tiles.device).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=tiles.dtype, device=tiles.device).view(1, 3, 1, 1)
    tiles.div_(255.0)
    tiles.sub_(mean).div_(std)
    return tiles


@dataclass
class PaneBatch:
    """The three panes of a batch of quadruple tiles, before assembly.

    Tile workers send these instead of tiles: they are a third of the size, and
    :meth:`to_tiles` assembles and normalises them on the model's device.
    ``positions`` index the selected cells (see :class:`shest.celltiles.CellSelection`).
    """

    positions: np.ndarray
    rgb: np.ndarray
    hematoxylin: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return int(self.positions.size)

    def to_tiles(
        self,
        device: torch.device | str | None = None,
        mean: Sequence[float] = HOPTIMUS_MEAN,
        std: Sequence[float] = HOPTIMUS_STD,
        normalise: bool = True,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the (N, 3, 2 * pane, 2 * pane) float32 tiles on ``device`` (the CPU by default).

        The panes are copied to the device first and assembled there, so a GPU
        receives the uint8 hematoxylin pane and boolean mask rather than float tiles.
        Every step is exact or a correctly rounded float32 operation, so the tiles are
        the same on every device.

        NOTE: assembly on a CUDA device has not been run by this project's tests,
        which run on CPU-only machines.
        """
        device = torch.device(device) if device is not None else torch.device("cpu")
        rgb = torch.from_numpy(self.rgb).to(device)
        hematoxylin = torch.from_numpy(self.hematoxylin).to(device)
        mask = torch.from_numpy(self.mask).to(device)
        tiles = assemble_tiles(rgb, hematoxylin, mask, out=out)
        return normalise_tiles(tiles, mean, std) if normalise else tiles


def build_pane_batch(
    windows: np.ndarray,
    pane_vertices: Sequence[np.ndarray],
    positions: np.ndarray | None = None,
    pane_px: int = PANE_PX,
) -> PaneBatch:
    """Build the RGB, hematoxylin and mask panes of a batch of cells.

    Parameters
    ----------
    windows
        (N, h, w, 3) uint8 RGB windows around the nuclei.
    pane_vertices
        For each cell, the nucleus outline as (row, column) vertices in pane pixels
        (see :func:`outline_to_pane`).
    positions
        Row positions of the cells, carried along; 0 .. N - 1 by default.
    pane_px
        Side of one pane.
    """
    if len(windows) != len(pane_vertices):
        raise ValueError(f"Got {len(windows)} windows but {len(pane_vertices)} outlines")
    rgb = resize_windows(windows, pane_px)
    return PaneBatch(
        positions=np.arange(len(windows), dtype=np.int64) if positions is None else np.asarray(positions),
        rgb=rgb.numpy(),
        hematoxylin=hematoxylin_uint8(rgb),
        mask=rasterise_masks(pane_vertices, pane_px),
    )


def build_quadruple_tiles(
    windows: np.ndarray,
    pane_vertices: Sequence[np.ndarray],
    pane_px: int = PANE_PX,
    normalise: bool = True,
    mean: Sequence[float] = HOPTIMUS_MEAN,
    std: Sequence[float] = HOPTIMUS_STD,
) -> torch.Tensor:
    """Build the model input for a batch of cells.

    Parameters
    ----------
    windows
        (N, h, w, 3) uint8 RGB windows around the nuclei.
    pane_vertices
        For each cell, the nucleus outline as (row, column) vertices in pane pixels
        (see :func:`outline_to_pane`).
    pane_px
        Side of one pane; the tile is twice as wide.
    normalise
        Apply :func:`normalise_tiles`; without it the tile contains 0-255 values.
    mean, std
        Per-channel input statistics of the backbone (0-1 scale).

    Returns
    -------
    torch.Tensor
        (N, 3, 2 * pane_px, 2 * pane_px) float32.
    """
    panes = build_pane_batch(windows, pane_vertices, pane_px=pane_px)
    return panes.to_tiles(mean=mean, std=std, normalise=normalise)
