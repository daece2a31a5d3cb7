"""One call that runs the niche analysis of a slide and writes its outputs (used by the CLI)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from shest.errors import InputError
from shest.io.naming import sample_name
from shest.niche.analysis import NicheResult, analyse_slide
from shest.niche.h5ad import read_slide_cells
from shest.niche.outputs import output_paths, write_outputs
from shest.niche.params import NicheParams

log = logging.getLogger(__name__)


def run_niche(
    h5ad: str | Path,
    outdir: str | Path,
    sample: str | None = None,
    params: NicheParams | None = None,
    slide: str | Path | None = None,
) -> tuple[NicheResult, dict[str, Path]]:
    """Analyse the cells of ``h5ad`` and write ``S.niche.h5ad``, the tables, figures and MultiQC tables.

    Parameters
    ----------
    h5ad
        ``S.h5ad`` written by ``shest infer``; it is only read.
    outdir
        Folder for the outputs.
    sample
        Output prefix; defaults to ``uns["shest"]["sample"]``, else the file name.
    params
        Analysis settings; the defaults of :class:`NicheParams` when ``None``.
    slide
        Optional slide image whose thumbnail is drawn under the niche map.

    Returns
    -------
    result, paths
        The analysis results and the final path of every written file.

    Raises
    ------
    InputError
        Unreadable input, unknown tumour or lymphocyte category, or an output that
        would replace the input.
    """
    h5ad = Path(h5ad)
    outdir = Path(outdir)
    params = params or NicheParams()
    cells = read_slide_cells(h5ad)
    recorded = cells.shest.get("sample")
    try:
        sample = sample_name(sample or (str(recorded) if recorded else None), h5ad)
    except InputError as exc:
        if sample is None and recorded:
            raise InputError(
                f"{h5ad.name} records the sample name {str(recorded)!r} (uns['shest']['sample']), which cannot be a "
                "file prefix: give one with --sample, using letters, digits, '.', '_' and '-'."
            ) from exc
        raise
    target = output_paths(outdir, sample)["h5ad"]
    if target.exists() and target.resolve() == h5ad.resolve():
        raise InputError(
            f"The output {target} would replace the input file; choose another output folder or sample name."
        )
    background = slide_background(slide, cells.mpp, cells) if slide else None

    result = analyse_slide(cells, sample, params)
    paths = write_outputs(result, cells, outdir, background)
    if len(result.notes):
        log.warning("%s: %d notes on undefined metrics; see %s", sample, len(result.notes), paths["table_notes"].name)
    return result, paths


def slide_background(slide: str | Path, mpp: float | None, cells=None):
    """Return (thumbnail RGB, µm per thumbnail pixel) of the slide, at most 2048 px on its long side.

    The AnnData's µm/px, when known, overrides the slide's so that thumbnail and
    cell coordinates share one scale. With ``cells``, the slide is checked against
    them first (see :func:`check_slide_matches_cells`).
    """
    from shest.slide import open_slide

    with open_slide(slide, mpp=mpp) as handle:
        if cells is not None:
            check_slide_matches_cells(Path(slide), handle.dimensions, cells)
        downsample = handle.thumbnail_downsample(2048)
        image = handle.thumbnail(downsample)
        return image, downsample * handle.mpp


def check_slide_matches_cells(slide: Path, dimensions: tuple[int, int], cells) -> None:
    """Check that ``--slide`` is the slide the cells were predicted on.

    A slide name other than the one recorded in ``uns["shest"]["slide"]`` only
    logs a warning, because workflow managers may stage files under other names.

    Raises
    ------
    InputError
        Cell centroids lie outside the slide's level-0 image.
    """
    recorded = cells.shest.get("slide")
    if recorded and str(recorded) != slide.name:
        log.warning("%s records the slide %s, but --slide is %s; check that it is the same slide.",
                    cells.path.name, recorded, slide.name)  # fmt: skip
    if len(cells.xy_px) == 0:
        return
    width, height = dimensions
    max_x, max_y = np.nanmax(cells.xy_px, axis=0)
    if max_x > width * 1.01 or max_y > height * 1.01:
        raise InputError(
            f"Cells of {cells.path.name} reach x {max_x:.0f}, y {max_y:.0f} px, outside the {width} x {height} px "
            f"slide {slide.name}; give the slide the cells were predicted on with --slide, or leave --slide out."
        )
