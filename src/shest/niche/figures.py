"""PNG figures of the niche analysis: niche map, enrichment heatmap, co-occurrence, infiltration.

Each figure is always written, so a pipeline finds the same files for every slide.
A panel whose analysis did not run shows the note that explains why. Figures of a
demo run carry "DEMO" in their title.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import numpy as np

from shest.niche.analysis import NicheResult
from shest.niche.regions import COMPARTMENTS

log = logging.getLogger(__name__)

DPI = 150
COMPARTMENT_COLORS = {"tumour": "#e8a0a0", "margin": "#f5d28c", "stroma": "#cfe3cf"}


def _new_figure(**kwargs):
    """Return a figure drawn by Agg outside pyplot, so the caller's matplotlib backend is left as it is."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(figure)
    return figure


def _title(result: NicheResult, text: str) -> str:
    return f"{'DEMO - ' if result.demo else ''}{result.sample}: {text}"


def _note_panel(ax, message: str) -> None:
    ax.set_axis_off()
    ax.text(0.5, 0.5, textwrap.fill(message, 50), ha="center", va="center", fontsize=9, transform=ax.transAxes)


def _marker_size(extent_um: float, axis_inches: float) -> float:
    """Return a scatter marker area (pt²) that draws a 10 µm cell at its true size, within readable bounds."""
    diameter_pt = 10.0 / max(extent_um, 1.0) * axis_inches * 72.0
    return float(np.clip(diameter_pt * diameter_pt, 0.05, 25.0))


def draw_niche_map(result: NicheResult, path: Path, background: tuple[np.ndarray, float] | None = None) -> None:
    """Draw cells coloured by type and by niche, over the slide thumbnail when one is given.

    Parameters
    ----------
    background
        ``(thumbnail RGB, µm per thumbnail pixel)``, or ``None`` for a white page.
    """
    cells = result.cells
    fig = _new_figure(figsize=(14, 7))
    axes = fig.subplots(1, 2)
    fig.suptitle(_title(result, "cell types and niches"))
    if cells.n_cells == 0:
        for ax in axes:
            _note_panel(ax, result.notes.joined("niches") or "No analysed cells.")
        fig.savefig(path, dpi=DPI)
        return

    xy_mm = cells.xy_um / 1000.0
    span = np.ptp(cells.xy_um, axis=0).max() if cells.n_cells > 1 else 100.0
    size = _marker_size(span, 6.5)
    panels = [("cell type", cells.labels, cells.colors)]
    if result.niches is not None:
        palette = niche_colors(len(result.niches.labels.categories))
        panels.append(("niche", result.niches.labels, dict(zip(result.niches.labels.categories, palette, strict=True))))
    for ax, panel in zip(axes, panels + [None] * (2 - len(panels)), strict=True):
        if panel is None:
            _note_panel(ax, "Niches not computed: " + (result.notes.joined("niches") or "see the notes table."))
            continue
        name, labels, colors = panel
        if background is not None:
            image, um_per_px = background
            height, width = image.shape[:2]
            ax.imshow(image, extent=(0, width * um_per_px / 1000.0, height * um_per_px / 1000.0, 0), alpha=0.6)
        codes = np.asarray(labels.codes)
        for code, category in enumerate(labels.categories):
            chosen = codes == code
            if chosen.any():
                ax.scatter(
                    xy_mm[chosen, 0],
                    xy_mm[chosen, 1],
                    s=size,
                    c=colors.get(str(category), "#000000"),
                    linewidths=0,
                    label=f"{category} ({int(chosen.sum()):,})",
                    rasterized=True,
                )
        _draw_tumour_outline(ax, result)
        ax.set_title(f"by {name}")
        ax.set_aspect("equal")
        if background is None:
            ax.invert_yaxis()
        ax.set_xlabel("x (mm)")
        ax.set_ylabel("y (mm)")
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            fontsize=7,
            markerscale=max(1.0, 6.0 / np.sqrt(size)),
            frameon=False,
        )
    fig.savefig(path, dpi=DPI)


def draw_enrichment_heatmap(result: NicheResult, path: Path) -> None:
    """Draw the neighbourhood enrichment z-scores as a heatmap (undefined cells in grey)."""
    from matplotlib import colormaps

    fig = _new_figure(figsize=(7, 6))
    ax = fig.subplots()
    fig.suptitle(_title(result, "neighbourhood enrichment (z-score)"))
    if result.zscore is None:
        _note_panel(ax, "Not computed: " + (result.notes.joined("enrichment") or "see the notes table."))
    else:
        z = np.asarray(result.zscore, dtype=float)
        finite = z[np.isfinite(z)]
        limit = float(np.abs(finite).max()) if finite.size else 1.0
        cmap = colormaps["RdBu_r"].with_extremes(bad="#bdbdbd")
        image = ax.imshow(np.ma.masked_invalid(z), cmap=cmap, vmin=-max(limit, 1e-9), vmax=max(limit, 1e-9))
        names = result.cells.categories
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), names)
        if len(names) <= 10:
            for i in range(len(names)):
                for j in range(len(names)):
                    text = f"{z[i, j]:.1f}" if np.isfinite(z[i, j]) else "n/a"
                    dark = np.isfinite(z[i, j]) and abs(z[i, j]) > 0.6 * limit
                    ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        fig.colorbar(image, ax=ax, label="z-score")
    fig.savefig(path, dpi=DPI)


def draw_co_occurrence(result: NicheResult, path: Path) -> None:
    """Draw co-occurrence ratio against distance, one panel per conditioning cell type."""
    names = result.cells.categories
    ratios = result.co_occurrence_ratios
    n_panels = max(1, len(names)) if ratios is not None else 1
    n_cols = min(3, n_panels)
    n_rows = int(np.ceil(n_panels / n_cols))
    fig = _new_figure(figsize=(4.2 * n_cols, 3.4 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    fig.suptitle(_title(result, "co-occurrence ratio within distance"))
    if ratios is None:
        _note_panel(axes[0, 0], "Not computed: " + (result.notes.joined("co_occurrence") or "see the notes table."))
    else:
        distances = np.asarray(sorted(result.params.co_occurrence_um))
        for a, name in enumerate(names):
            ax = axes[a // n_cols, a % n_cols]
            for b, other in enumerate(names):
                ax.plot(
                    distances,
                    ratios[a, b],
                    marker="o",
                    ms=3,
                    color=result.cells.colors.get(other, "#000000"),
                    label=other,
                )
            ax.axhline(1.0, color="#555555", lw=0.8, ls="--")
            ax.set_title(f"given {name}", fontsize=9)
            ax.set_xlabel("distance (µm)")
            ax.set_ylabel("ratio")
        axes[0, 0].legend(fontsize=6, frameon=False)
    for k in range(n_panels, n_rows * n_cols):
        axes[k // n_cols, k % n_cols].set_axis_off()
    fig.savefig(path, dpi=DPI)


def draw_infiltration(result: NicheResult, path: Path) -> None:
    """Draw the compartments with lymphocytes, densities per compartment and the distance histogram."""
    fig = _new_figure(figsize=(16, 5.2))
    axes = fig.subplots(1, 3)
    fig.suptitle(_title(result, "immune infiltration"))
    infiltration = result.infiltration
    compartments = result.compartments
    if infiltration is None or compartments is None:
        for ax in axes:
            _note_panel(ax, "Not computed: " + (result.notes.joined("infiltration") or "see the notes table."))
        fig.savefig(path, dpi=DPI)
        return

    ax = axes[0]
    # uint8 keeps a raster of up to MAX_RASTER_PIXELS at 3 bytes per pixel.
    rgb = np.full(compartments.tissue.shape + (3,), 255, dtype=np.uint8)
    for name in COMPARTMENTS:
        rgb[getattr(compartments, name)] = np.round(np.multiply(_hex_to_rgb(COMPARTMENT_COLORS[name]), 255))
    rows, cols = compartments.tissue.shape
    x0, y0 = compartments.origin_um
    grid = compartments.grid_um
    extent = (x0 / 1000, (x0 + cols * grid) / 1000, (y0 + rows * grid) / 1000, y0 / 1000)
    ax.imshow(rgb, extent=extent, interpolation="nearest")
    lymph = result.cells.mask(result.params.lymphocyte_type)
    if lymph.any():
        xy_mm = result.cells.xy_um[lymph] / 1000.0
        span = float(np.ptp(result.cells.xy_um, axis=0).max()) if result.cells.n_cells > 1 else 100.0
        ax.scatter(xy_mm[:, 0], xy_mm[:, 1], s=_marker_size(span, 5.0), c="#1f3fbf", linewidths=0, rasterized=True)
    ax.set_title("tumour (red), margin (amber), stroma (green); lymphocytes in blue", fontsize=8)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_aspect("equal")

    ax = axes[1]
    values = [infiltration.value(f"lymphocyte_density_{name}") for name in COMPARTMENTS]
    heights = [v if np.isfinite(v) else 0.0 for v in values]
    ax.bar(COMPARTMENTS, heights, color=[COMPARTMENT_COLORS[n] for n in COMPARTMENTS], edgecolor="#333333")
    for i, value in enumerate(values):
        ax.text(i, heights[i], f"{value:,.0f}" if np.isfinite(value) else "n/a", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("lymphocytes per mm²")
    ax.set_title(f"lymphocyte density (margin: {result.params.margin_um:g} µm band)", fontsize=9)

    ax = axes[2]
    distances = infiltration.lymphocyte_distances_um
    if distances.size:
        upper = float(np.quantile(distances, 0.99)) if distances.size > 1 else float(distances.max())
        ax.hist(np.clip(distances, 0, max(upper, 1.0)), bins=50, color="#1f3fbf")
        ax.axvline(result.params.contact_um, color="#d62728", ls="--", lw=1, label=f"{result.params.contact_um:g} µm")
        ax.legend(fontsize=8, frameon=False)
        ax.set_xlabel("distance to nearest tumour cell (µm; last bin holds the top 1%)")
        ax.set_ylabel("lymphocytes")
    else:
        _note_panel(
            ax,
            "Distance distribution undefined: "
            + (result.notes.joined("infiltration") or "needs tumour cells and lymphocytes."),
        )
    fig.savefig(path, dpi=DPI)


def _draw_tumour_outline(ax, result: NicheResult) -> None:
    compartments = result.compartments
    if compartments is None or not compartments.tumour.any():
        return
    rows, cols = compartments.tumour.shape
    grid = compartments.grid_um
    x0, y0 = compartments.origin_um
    xs = (x0 + (np.arange(cols) + 0.5) * grid) / 1000.0
    ys = (y0 + (np.arange(rows) + 0.5) * grid) / 1000.0
    ax.contour(xs, ys, compartments.tumour.astype(float), levels=[0.5], colors="#000000", linewidths=0.6)


def niche_colors(n: int) -> list[str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = colormaps["tab20" if n > 10 else "tab10"]
    return [to_hex(palette(i % palette.N)) for i in range(n)]


def _hex_to_rgb(color: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(color)
