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
antialiasing). The outline is rasterised by ``skimage.draw.polygon``, which
``polygon2mask`` calls. The hematoxylin image comes from ``rgb2hed`` and ``hed2rgb``
on the resized window truncated to uint8. Last come scaling to 0-1 and the
H-optimus-0 normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import hed2rgb, rgb2hed
from skimage.draw import polygon as fill_polygon

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
    """Rasterise (row, column) polygons into a (N, pane, pane) boolean array.

    Pixels are filled as ``skimage.draw.polygon2mask`` fills them; parts outside the
    pane are dropped.
    """
    masks = np.zeros((len(vertices), pane_px, pane_px), dtype=bool)
    for index, rc in enumerate(vertices):
        rr, cc = fill_polygon(rc[:, 0], rc[:, 1], (pane_px, pane_px))
        masks[index, rr, cc] = True
    return masks


def resize_windows(windows: np.ndarray | torch.Tensor, pane_px: int = PANE_PX) -> torch.Tensor:
    """Resize (N, h, w, 3) uint8 windows to (N, 3, pane, pane) float32, bilinear without antialiasing."""
    batch = torch.as_tensor(windows)
    batch = batch.permute(0, 3, 1, 2).float()
    return F.interpolate(batch, size=(pane_px, pane_px), mode="bilinear", align_corners=False)


def hematoxylin_panes(resized: torch.Tensor) -> torch.Tensor:
    """Return the hematoxylin-only image of resized windows, (N, 3, pane, pane) float32 in 0-255.

    The resized window is truncated to uint8, separated with ``rgb2hed``, its eosin
    and DAB channels set to zero, recombined with ``hed2rgb``, scaled by 255 and
    truncated to uint8 again.
    """
    rgb = resized.permute(0, 2, 3, 1).numpy().astype(np.uint8)
    hed = rgb2hed(rgb)
    hed[..., 1:] = 0.0
    hematoxylin = (hed2rgb(hed) * 255).astype(np.uint8)
    return torch.from_numpy(hematoxylin).permute(0, 3, 1, 2).float()


def assemble_tiles(rgb: torch.Tensor, hematoxylin: torch.Tensor, masks: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Assemble (N, 3, 2 * pane, 2 * pane) tiles from the RGB and hematoxylin panes and masks."""
    mask = torch.as_tensor(masks).unsqueeze(1).to(rgb.dtype)
    n, channels, pane, _ = rgb.shape
    tiles = torch.empty((n, channels, 2 * pane, 2 * pane), dtype=rgb.dtype)
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
    mean = torch.tensor(mean, dtype=tiles.dtype).view(1, 3, 1, 1)
    std = torch.tensor(std, dtype=tiles.dtype).view(1, 3, 1, 1)
    tiles.div_(255.0)
    tiles.sub_(mean).div_(std)
    return tiles


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
    if len(windows) != len(pane_vertices):
        raise ValueError(f"Got {len(windows)} windows but {len(pane_vertices)} outlines")
    rgb = resize_windows(windows, pane_px)
    hematoxylin = hematoxylin_panes(rgb)
    masks = rasterise_masks(pane_vertices, pane_px)
    tiles = assemble_tiles(rgb, hematoxylin, masks)
    return normalise_tiles(tiles, mean, std) if normalise else tiles
