"""Overview image: the slide thumbnail with nuclei coloured by predicted cell type and a legend.

Nuclei are painted with Pillow onto the thumbnail and the legend is drawn by matplotlib
(Agg) beside it. Pillow keeps the peak memory near a few copies of the thumbnail,
where rendering the thumbnail through a matplotlib figure takes about 0.5 GB at
2048 x 2048 px.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import shapely

from shest.model.constants import UNASSIGNED_COLOR, UNASSIGNED_NAME
from shest.outputs.geojson import hex_to_rgb

OVERLAY_MAX_SIDE = 2048
FILL_ALPHA = 200
LEGEND_WIDTH_PX = 360
DPI = 100


DEMO_BANNER = "DEMO MODEL: cell types are not biological predictions"
DEMO_BAND_COLOR = (200, 0, 0)


def write_overlay(
    path: str | os.PathLike,
    slide,
    cells: pd.DataFrame,
    class_index: np.ndarray,
    probability: np.ndarray,
    classes: Sequence[str],
    colors: Sequence[str],
    probability_cutoff: float,
    title: str,
    demo: bool,
    max_side: int = OVERLAY_MAX_SIDE,
) -> float:
    """Write the overlay PNG and return the thumbnail downsample (level-0 px per thumbnail px).

    Cells below the probability cutoff are painted grey as ``Unassigned``. The legend
    lists every class with its cell count, and its title marks a demo run.
    """
    from PIL import Image, ImageDraw

    downsample = slide.thumbnail_downsample(max_side)
    thumbnail = Image.fromarray(slide.thumbnail(downsample)).convert("RGBA")

    unassigned = np.asarray(probability) < probability_cutoff
    palette = [*colors, UNASSIGNED_COLOR]
    codes = np.where(unassigned, len(classes), np.asarray(class_index, dtype=np.int64))
    fills = [(*hex_to_rgb(color), FILL_ALPHA) for color in palette]

    layer = Image.new("RGBA", thumbnail.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for ring, code in zip(_outer_rings(cells["geometry"].to_numpy()), codes, strict=True):
        points = [(float(x) / downsample, float(y) / downsample) for x, y in ring]
        draw.polygon(points, fill=fills[code], outline=fills[code])
    composite = Image.alpha_composite(thumbnail, layer).convert("RGB")
    del layer, thumbnail

    counts = np.bincount(codes, minlength=len(palette))
    labels = [f"{name} ({count})" for name, count in zip([*classes, UNASSIGNED_NAME], counts, strict=True)]
    heading = f"{title}\nDEMO MODEL: not biological predictions" if demo else title
    legend = _legend_image(labels, palette, heading, composite.height)

    width = composite.width + legend.width
    band = _demo_band_height(width) if demo else 0
    canvas = Image.new("RGB", (width, band + max(composite.height, legend.height)), "white")
    canvas.paste(composite, (0, band))
    canvas.paste(legend, (composite.width, band))
    if demo:
        _draw_demo_band(canvas, band)
    canvas.save(path, format="PNG")
    return float(downsample)


def _demo_band_height(width: int) -> int:
    return max(24, width // 30)


def _draw_demo_band(canvas, band: int) -> None:
    """Draw a red band of height ``band`` across the top of ``canvas`` that marks the predictions as a demo.

    The legend title marks it too, but a figure cropped to the slide would lose that,
    so the band spans the image, at a size readable in a slide deck.
    """
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=int(band * 0.7))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, canvas.width, band - 1), fill=DEMO_BAND_COLOR)
    draw.text((band // 3, band // 2), DEMO_BANNER, fill="white", font=font, anchor="lm")


def _legend_image(labels: list[str], colors: Sequence[str], heading: str, height: int):
    """Render a legend with matplotlib (Agg) as an RGB Pillow image of ``LEGEND_WIDTH_PX`` width."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from PIL import Image

    rows = len(labels) + heading.count("\n") + 2
    figure_height = max(rows * 0.22, 1.0)
    figure = Figure(figsize=(LEGEND_WIDTH_PX / DPI, figure_height), dpi=DPI)
    canvas = FigureCanvasAgg(figure)
    handles = [Patch(facecolor=color, edgecolor="black", linewidth=0.5) for color in colors]
    figure.legend(handles, labels, loc="upper left", title=heading, fontsize=8, title_fontsize=8, frameon=False)
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
    if image.height > height:
        return image
    padded = Image.new("RGB", (image.width, height), "white")
    padded.paste(image, (0, 0))
    return padded


def _outer_rings(geometries: np.ndarray):
    for geometry in geometries:
        if shapely.get_type_id(geometry) == 6:
            parts = shapely.get_parts(geometry)
            geometry = parts[int(np.argmax(shapely.area(parts)))]
        yield np.asarray(geometry.exterior.coords)[:, :2]
