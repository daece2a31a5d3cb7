"""The per-slide AnnData: reconstructed counts, cell types, morphology, coordinates, embedding.

Layout (scverse conventions):

- ``X``: reconstructed counts ``round((1 - π) μ)``, int32, sparse CSR rows; one column
  per gene, ``var_names`` in the model's output order;
- ``obs``: ``cell_id``, ``cell_type`` (categorical, categories in the model's class
  order), ``cell_type_probability``, ``unassigned`` (probability below the cutoff;
  the predicted type is kept) and the morphology columns of the cell table;
- ``obsm``: ``spatial`` (x, y level-0 px), ``spatial_um`` (x, y µm) and
  ``X_embedding`` (backbone class-token embedding, float16);
- ``uns``: ``cell_type_colors`` and ``shest`` (sample, slide, µm/px, cutoff, demo flag,
  model provenance, tile geometry, cell counts, package version).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd

from shest import __version__

log = logging.getLogger(__name__)

MORPHOLOGY_COLUMNS = ("area_um2", "perimeter_um", "eccentricity", "solidity", "hematoxylin_od")


def build_anndata(
    cells: pd.DataFrame,
    class_index: np.ndarray,
    probability: np.ndarray,
    counts,
    embedding: np.ndarray,
    classes: list[str],
    colors: list[str],
    genes: list[str],
    mpp: float,
    probability_cutoff: float,
    shest_info: dict[str, Any],
):
    """Assemble the AnnData of one slide.

    Parameters
    ----------
    cells
        Rows of the cell table that were predicted, in output order, with ``cell_id``,
        ``x``, ``y`` and optionally ``x_um``, ``y_um`` and the morphology columns.
    class_index, probability
        Predicted class per cell and its probability.
    counts
        (cells, genes) integer matrix, dense or sparse.
    embedding
        (cells, width) backbone embedding.
    classes, colors, genes
        Output labels of the model.
    mpp
        Level-0 µm/px, for ``obsm["spatial_um"]`` when the table lacks µm columns.
    probability_cutoff
        Cells with a lower probability are flagged ``unassigned``.
    shest_info
        Provenance merged into ``uns["shest"]`` (sample, slide, model, demo, ...).
    """
    import anndata as ad

    n = len(cells)
    cell_ids = cells["cell_id"].to_numpy(dtype=np.int64)
    obs = pd.DataFrame(index=pd.Index(cell_ids.astype(str), name="cell"))
    obs["cell_id"] = cell_ids
    obs["cell_type"] = pd.Categorical.from_codes(np.asarray(class_index, dtype=np.int64), categories=list(classes))
    obs["cell_type_probability"] = np.asarray(probability, dtype=np.float32)
    obs["unassigned"] = obs["cell_type_probability"].to_numpy() < probability_cutoff
    for column in MORPHOLOGY_COLUMNS:
        if column in cells.columns:
            obs[column] = cells[column].to_numpy(dtype=np.float64)

    spatial = np.column_stack([cells["x"].to_numpy(np.float64), cells["y"].to_numpy(np.float64)])
    if {"x_um", "y_um"} <= set(cells.columns):
        spatial_um = np.column_stack([cells["x_um"].to_numpy(np.float64), cells["y_um"].to_numpy(np.float64)])
    else:
        spatial_um = spatial * mpp

    var = pd.DataFrame(index=pd.Index(list(genes), name="gene"))
    adata = ad.AnnData(X=counts, obs=obs, var=var)
    adata.obsm["spatial"] = spatial
    adata.obsm["spatial_um"] = spatial_um
    adata.obsm["X_embedding"] = np.asarray(embedding, dtype=np.float16)
    adata.uns["cell_type_colors"] = list(colors)
    adata.uns["shest"] = _h5ad_safe(
        {
            **shest_info,
            "mpp": float(mpp),
            "probability_cutoff": float(probability_cutoff),
            "n_cells": int(n),
            "n_unassigned": int(obs["unassigned"].sum()),
            "version": __version__,
        }
    )
    return adata


def write_h5ad(adata, path: str | os.PathLike) -> None:
    """Write the AnnData with gzip-compressed arrays."""
    adata.write_h5ad(path, compression="gzip")


def _h5ad_safe(value: Any) -> Any:
    """Replace values h5ad cannot store (None, tuples, numpy scalars) by storable ones."""
    if isinstance(value, dict):
        return {str(key): _h5ad_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_h5ad_safe(item) for item in value]
        return items if items else np.array([], dtype=str)
    if value is None:
        return ""
    if isinstance(value, np.generic):
        return value.item()
    return value
