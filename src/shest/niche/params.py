"""Parameters of the niche analysis, with their defaults and units (µm throughout)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from shest.errors import InputError

GRAPH_TYPES = ("delaunay", "radius", "knn")
SEED_MAX = 2**32 - 1  # the range that numpy's RandomState and scikit-learn accept
MIN_GRID_UM = 1.0
MIN_PERMUTATIONS = 20
# Upper limits of the options: (maximum, unit). Each bounds the work of one analysis
# (the pairs visited within a radius, the padding and disc kernels of the region
# raster, the permutations, the k-means clusters). A window or rule radius of a few
# mm no longer describes a cell's surroundings, and every cell is then "near" every
# other one.
LIMITS: dict[str, tuple[float, str]] = {
    "max_edge_um": (5000.0, "µm"),
    "radius_um": (2000.0, "µm"),
    "co_occurrence_um": (5000.0, "µm"),
    "niche_radius_um": (2000.0, "µm"),
    "margin_um": (5000.0, "µm"),
    "contact_um": (5000.0, "µm"),
    "tumour_radius_um": (2000.0, "µm"),
    "tissue_radius_um": (2000.0, "µm"),
    "grid_um": (100.0, "µm"),
    "min_region_um2": (1e8, "µm²"),
    "n_neighbors": (100, "neighbours"),
    "niche_neighbors": (500, "cells"),
    "n_perms": (100_000, "permutations"),
    "n_niches": (50, "niches"),
}
# Below this many analysed cells the graph statistics (enrichment, co-occurrence,
# niches, Moran's I) are not computed: permutation z-scores and k-means on a handful
# of cells describe noise. Counts and infiltration areas are still reported.
MIN_CELLS = 10


@dataclass(frozen=True)
class NicheParams:
    """Settings of one ``shest niche`` run; every length is in µm.

    Attributes
    ----------
    graph
        Spatial graph: ``delaunay`` (triangulation, edges longer than ``max_edge_um``
        dropped), ``radius`` (all cells within ``radius_um``) or ``knn``
        (``n_neighbors`` nearest cells).
    n_perms
        Label permutations of the neighbourhood enrichment test.
    co_occurrence_um
        Distances at which co-occurrence ratios are computed.
    n_niches, niche_neighbors, niche_radius_um
        Number of k-means niches; each cell's window is its ``niche_neighbors``
        nearest cells (itself included), or every cell within ``niche_radius_um``
        when that is set.
    moran_top
        Number of genes, ranked by Moran's I, written to the Moran table.
    margin_um, contact_um
        Width of the band outside tumour regions counted as the margin, and the
        distance within which a lymphocyte counts as touching a tumour cell.
    tumour_type, lymphocyte_type
        Category names of tumour cells and lymphocytes in ``obs["cell_type"]``.
    tumour_radius_um, tumour_min_cells, tumour_min_fraction
        Tumour-region rule: a point is tumour when at least ``tumour_min_cells``
        tumour cells lie within ``tumour_radius_um`` of it and they make up at least
        ``tumour_min_fraction`` of the cells there.
    tissue_radius_um
        A point is tissue when a cell lies within this distance of it.
    grid_um
        Pixel size of the raster on which regions are drawn and measured.
    min_region_um2
        Tumour regions smaller than this are dropped and holes smaller than this
        are filled.
    keep_unassigned
        Analyse cells below the probability cutoff as their own category
        (``Unassigned``) instead of leaving them out.
    seed
        Seed of the permutations and of k-means, from 0 to :data:`SEED_MAX`.

    Raises
    ------
    InputError
        A value outside its range: the upper limits are in :data:`LIMITS`, and the
        message names the ``shest niche`` option that sets the field.
    """

    graph: str = "delaunay"
    max_edge_um: float = 50.0
    radius_um: float = 30.0
    n_neighbors: int = 6
    n_perms: int = 1000
    co_occurrence_um: tuple[float, ...] = (20.0, 50.0, 100.0)
    n_niches: int = 6
    niche_neighbors: int = 10
    niche_radius_um: float | None = None
    moran_top: int = 20
    margin_um: float = 100.0
    contact_um: float = 20.0
    tumour_type: str = "Tumor_cell_LUAD"
    lymphocyte_type: str = "Lymphocyte"
    tumour_radius_um: float = 50.0
    tumour_min_cells: int = 5
    tumour_min_fraction: float = 0.5
    tissue_radius_um: float = 25.0
    grid_um: float = 10.0
    min_region_um2: float = 20000.0
    keep_unassigned: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.graph not in GRAPH_TYPES:
            raise InputError(f"Unknown graph type {self.graph!r}; choose one of {', '.join(GRAPH_TYPES)}.")
        positive = {
            "max_edge_um": self.max_edge_um,
            "radius_um": self.radius_um,
            "margin_um": self.margin_um,
            "contact_um": self.contact_um,
            "tumour_radius_um": self.tumour_radius_um,
            "tissue_radius_um": self.tissue_radius_um,
            "grid_um": self.grid_um,
        }
        if self.niche_radius_um is not None:
            positive["niche_radius_um"] = self.niche_radius_um
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"{option_name(name)} must be a positive number of µm, found {value}.")
        for name in ("n_neighbors", "n_niches", "niche_neighbors", "moran_top", "tumour_min_cells"):
            if getattr(self, name) < 1:
                raise InputError(f"{option_name(name)} must be at least 1, found {getattr(self, name)}.")
        if self.n_perms < MIN_PERMUTATIONS:
            raise InputError(
                f"--n-perms must be at least {MIN_PERMUTATIONS}, found {self.n_perms}: a z-score needs the spread of "
                "the permuted edge counts, which a handful of permutations does not estimate (default 1000)."
            )
        if not 0.0 < self.tumour_min_fraction <= 1.0:
            raise InputError(f"--tumour-min-fraction must be in (0, 1], found {self.tumour_min_fraction}.")
        if not (math.isfinite(self.min_region_um2) and self.min_region_um2 >= 0):
            raise InputError(f"--min-region-um2 must be 0 or more, found {self.min_region_um2}.")
        if not self.co_occurrence_um or any(not (math.isfinite(d) and d > 0) for d in self.co_occurrence_um):
            raise InputError(
                f"--co-occurrence-um must list positive distances in µm, found {list(self.co_occurrence_um)}."
            )
        if self.grid_um < MIN_GRID_UM:
            raise InputError(
                f"--grid-um {self.grid_um:g} is below the minimum of {MIN_GRID_UM:g} µm; "
                "pixels finer than that add memory but no detail to the regions."
            )
        for name, (maximum, unit) in LIMITS.items():
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            for item in values:
                if item is not None and item > maximum:
                    raise InputError(
                        f"{option_name(name)} {item:g} is above the limit of {maximum:g} {unit}; "
                        f"give a value of at most {maximum:g}."
                    )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or not 0 <= self.seed <= SEED_MAX:
            raise InputError(f"--seed {self.seed} is invalid; give an integer from 0 to {SEED_MAX}.")
        if self.tumour_type == self.lymphocyte_type:
            raise InputError(
                f"--tumour-type and --lymphocyte-type are both {self.tumour_type!r}; name two categories."
            )

    def to_dict(self) -> dict:
        """Return the parameters as plain values (lists for tuples, no ``None``) for ``uns``."""
        values = asdict(self)
        values["co_occurrence_um"] = [float(d) for d in self.co_occurrence_um]
        values["niche_radius_um"] = float(self.niche_radius_um) if self.niche_radius_um is not None else 0.0
        return values


def option_name(field: str) -> str:
    """Return the ``shest niche`` option that sets a :class:`NicheParams` field (``grid_um`` -> ``--grid-um``)."""
    return "--" + field.replace("_", "-")
