"""Synthetic slides with a known spatial layout, in the AnnData layout of ``shest infer``.

The tests and ``benchmarks/niche_benchmark.py`` build their inputs here. Cells are
placed by a rule whose expected result is known (tumour islands with lymphocytes
inside them, a random layout, two separated populations) and stored exactly as the
inference stage stores real predictions. Every file built here is marked as a demo in
``uns["shest"]["demo"]``, because no model predicted it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from shest.model.constants import LUNG_CLASSES, default_class_colors

# Cell-type mixtures (in LUNG_CLASSES order) inside and outside tumour islands.
ISLAND_MIXTURE = (0.0, 0.85, 0.04, 0.02, 0.04, 0.05)
STROMA_MIXTURE = (0.35, 0.0, 0.12, 0.15, 0.23, 0.15)


def build_anndata(
    xy_um: np.ndarray,
    cell_types: Sequence[str] | np.ndarray,
    class_names: Sequence[str] = LUNG_CLASSES,
    mpp: float = 0.25,
    sample: str = "synthetic",
    n_genes: int = 20,
    unassigned_fraction: float = 0.0,
    embedding_dim: int = 0,
    seed: int = 0,
    colors: Sequence[str] | None = None,
):
    """Build an AnnData with the layout that ``shest infer`` writes.

    Parameters
    ----------
    xy_um
        Cell centroids, shape (n, 2), (x, y) in µm.
    cell_types
        One class name per cell; every name must be in ``class_names``.
    class_names
        Categories of ``obs["cell_type"]``, in model class order.
    mpp
        µm/px used to derive ``obsm["spatial"]`` (level-0 px) from the µm coordinates.
    n_genes
        Number of reconstructed genes. Gene ``g`` has a Poisson mean that depends on
        the cell type, so genes specific to a spatially clustered type are spatially
        autocorrelated. The last gene is all zeros (a constant gene).
    unassigned_fraction
        Share of cells, drawn at random, given a probability below the 0.7 cutoff and
        ``unassigned = True``.
    embedding_dim
        Width of ``obsm["X_embedding"]`` (float16); 0 leaves it out.
    """
    import anndata as ad

    rng = np.random.default_rng(seed)
    xy_um = np.asarray(xy_um, dtype=np.float64).reshape(-1, 2)
    n_cells = xy_um.shape[0]
    codes = pd.Categorical(np.asarray(cell_types), categories=list(class_names))
    if np.any(codes.codes < 0):
        raise ValueError("every cell type must be one of class_names")

    probability = rng.uniform(0.75, 1.0, n_cells).astype(np.float32)
    unassigned = rng.random(n_cells) < unassigned_fraction
    probability[unassigned] = rng.uniform(0.3, 0.69, int(unassigned.sum())).astype(np.float32)

    X = _expression(codes.codes, len(class_names), n_genes, rng)
    cell_id = np.arange(1, n_cells + 1, dtype=np.int64)
    obs = pd.DataFrame(
        {
            "cell_id": cell_id,
            "cell_type": codes,
            "cell_type_probability": probability,
            "unassigned": unassigned,
            "x": xy_um[:, 0] / mpp,
            "y": xy_um[:, 1] / mpp,
            "area_um2": rng.uniform(20.0, 60.0, n_cells),
        },
        index=pd.Index(cell_id.astype(str)),
    )
    var = pd.DataFrame(index=pd.Index([f"GENE{g:04d}" for g in range(n_genes)]))
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["spatial"] = xy_um / mpp
    adata.obsm["spatial_um"] = xy_um.copy()
    if embedding_dim:
        adata.obsm["X_embedding"] = _embedding(n_cells, embedding_dim, rng)
    palette = list(colors) if colors is not None else default_class_colors(class_names)
    adata.uns["cell_type_colors"] = np.array(palette, dtype=object)
    adata.uns["shest"] = {
        "sample": sample,
        "slide": f"{sample}.synthetic",
        "mpp": float(mpp),
        "probability_cutoff": 0.7,
        "demo": True,
        "model": {"backbone": "none (synthetic layout)", "classes": list(class_names), "n_genes": n_genes},
        "version": "synthetic",
    }
    return adata


def random_layout(
    n_cells: int, side_um: float, type_shares: Sequence[float], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Place cells uniformly in a square and draw their types independently of position.

    Returns
    -------
    xy_um, cell_types
        Centroids (n, 2) in µm and an array of class names from :data:`LUNG_CLASSES`.
    """
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0.0, side_um, size=(n_cells, 2))
    shares = np.asarray(type_shares, dtype=float)
    types = rng.choice(np.array(LUNG_CLASSES), size=n_cells, p=shares / shares.sum())
    return xy, types


def island_layout(
    n_cells: int,
    density_per_mm2: float = 2500.0,
    tumour_area_fraction: float = 0.25,
    island_radius_um: tuple[float, float] = (150.0, 500.0),
    island_mixture: Sequence[float] = ISLAND_MIXTURE,
    stroma_mixture: Sequence[float] = STROMA_MIXTURE,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Place cells uniformly over a square of tissue holding circular tumour islands.

    Cells inside an island take their type from ``island_mixture``, cells outside
    from ``stroma_mixture`` (both in :data:`LUNG_CLASSES` order). With the default
    mixtures the islands are mostly tumour cells and the lymphocytes are scattered
    through the stroma, as in a lung adenocarcinoma section.

    Returns
    -------
    xy_um, cell_types, layout
        Centroids in µm, class names, and a dict with ``side_um``, the island
        ``centres_um`` (k, 2), ``radii_um`` (k,) and the boolean ``inside`` per cell.
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    side_um = float(np.sqrt(n_cells / density_per_mm2) * 1000.0)
    xy = rng.uniform(0.0, side_um, size=(n_cells, 2))

    low, high = island_radius_um
    mean_area = np.pi * (low * low + low * high + high * high) / 3.0
    n_islands = max(1, round(tumour_area_fraction * side_um * side_um / mean_area))
    radii = rng.uniform(low, high, n_islands)
    centres = rng.uniform(0.0, side_um, size=(n_islands, 2))

    tree = cKDTree(xy)
    inside = np.zeros(n_cells, dtype=bool)
    for centre, radius in zip(centres, radii, strict=True):
        inside[tree.query_ball_point(centre, radius)] = True

    names = np.array(LUNG_CLASSES)
    types = np.empty(n_cells, dtype=object)
    island_p = np.asarray(island_mixture, float)
    stroma_p = np.asarray(stroma_mixture, float)
    types[inside] = rng.choice(names, size=int(inside.sum()), p=island_p / island_p.sum())
    types[~inside] = rng.choice(names, size=int((~inside).sum()), p=stroma_p / stroma_p.sum())
    layout = {"side_um": side_um, "centres_um": centres, "radii_um": radii, "inside": inside}
    return xy, types.astype(str), layout


def _expression(codes: np.ndarray, n_types: int, n_genes: int, rng: np.random.Generator) -> np.ndarray:
    """Draw Poisson counts whose mean depends on the cell type; the last gene stays 0."""
    if n_genes == 0:
        return np.zeros((codes.size, 0), dtype=np.int32)
    means = rng.uniform(0.2, 2.0, size=(n_types, n_genes))
    # Each of the first genes is a marker of one type: high there, low elsewhere.
    for gene in range(min(n_types, n_genes)):
        means[:, gene] = 0.2
        means[gene, gene] = 8.0
    means[:, n_genes - 1] = 0.0
    X = np.empty((codes.size, n_genes), dtype=np.int32)
    step = 200_000
    for start in range(0, codes.size, step):
        block = codes[start : start + step]
        X[start : start + step] = rng.poisson(means[block]).astype(np.int32)
    return X


def _embedding(n_cells: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n_cells, dim), dtype=np.float16)
    step = 50_000
    for start in range(0, n_cells, step):
        stop = min(n_cells, start + step)
        out[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    return out
