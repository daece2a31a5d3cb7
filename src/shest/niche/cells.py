"""The cells that enter the niche analysis and the labels they are analysed under."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shest.errors import InputError
from shest.model.constants import UNASSIGNED_COLOR, UNASSIGNED_NAME
from shest.niche.h5ad import SlideCells
from shest.niche.notes import Notes
from shest.niche.params import NicheParams


@dataclass
class AnalysisCells:
    """Analysed cells: their rows in the input, µm coordinates and analysis labels.

    ``labels`` is categorical with only the categories that occur, in model class
    order, followed by ``Unassigned`` when unassigned cells are kept.
    """

    rows: np.ndarray
    xy_um: np.ndarray
    labels: pd.Categorical
    colors: dict[str, str]
    tumour_type: str
    lymphocyte_type: str

    @property
    def n_cells(self) -> int:
        return int(self.rows.size)

    @property
    def categories(self) -> list[str]:
        return list(self.labels.categories)

    @property
    def codes(self) -> np.ndarray:
        return np.asarray(self.labels.codes, dtype=np.int64)

    def mask(self, category: str) -> np.ndarray:
        """Return a boolean mask of the cells labelled ``category`` (all False if absent)."""
        if category not in self.labels.categories:
            return np.zeros(self.n_cells, dtype=bool)
        return self.codes == self.labels.categories.get_loc(category)

    def counts(self) -> pd.Series:
        """Return the number of analysed cells per category."""
        return pd.Series(np.bincount(self.codes, minlength=len(self.categories)), index=self.categories)


def select_cells(slide: SlideCells, params: NicheParams, notes: Notes) -> AnalysisCells:
    """Choose the analysed cells and their labels from the input ``obs``.

    Unassigned cells (``obs["unassigned"]``) are left out unless
    ``params.keep_unassigned`` is set; then they form the ``Unassigned`` category.
    Cells without a type (missing in ``obs["cell_type"]``) are always left out.
    Categories with no analysed cell are dropped, with a note naming them.

    A tumour or lymphocyte type that is not a category of ``obs["cell_type"]`` but
    is a class of the model recorded in ``uns["shest"]["model"]["classes"]`` is
    treated as a type without cells, with a note: subsetting an AnnData drops the
    categories that no remaining cell has.

    Without recorded classes, such a type is also treated as having no cells, and
    the note lists the categories so that a misspelt name shows.

    Raises
    ------
    InputError
        ``params.tumour_type`` or ``params.lymphocyte_type`` is not a category of
        ``obs["cell_type"]`` and not one of the recorded model classes either.
    """
    cell_type = slide.obs["cell_type"]
    model_categories = [str(c) for c in cell_type.cat.categories]
    _check_named_types(slide, params, model_categories, notes)

    unassigned = _unassigned_mask(slide.obs)
    labels = pd.Categorical(cell_type.to_numpy(), categories=model_categories)
    missing = np.asarray(labels.isna())
    if missing.any():
        notes.add("cells", f"{int(missing.sum())} cells have no cell type in obs['cell_type'] and are left out.")
        unassigned = unassigned & ~missing
    if params.keep_unassigned:
        if UNASSIGNED_NAME not in labels.categories:
            labels = labels.add_categories([UNASSIGNED_NAME])
        labels[unassigned] = UNASSIGNED_NAME
        rows = np.flatnonzero(~missing)
        labels = labels[rows]
    else:
        rows = np.flatnonzero(~unassigned & ~missing)
        labels = labels[rows]
        if unassigned.any():
            notes.add(
                "cells",
                f"{int(unassigned.sum())} unassigned cells (probability below the cutoff) are left out; "
                "pass --keep-unassigned to analyse them as their own category.",
            )

    labels = pd.Categorical(labels)  # a fresh copy so remove_unused_categories keeps the order
    present = labels.remove_unused_categories()
    absent = [name for name in labels.categories if name not in present.categories]
    if absent and len(rows):
        notes.add("cells", f"No analysed cells of type {', '.join(absent)}.")

    colors = dict(slide.colors)
    colors.setdefault(UNASSIGNED_NAME, UNASSIGNED_COLOR)
    _fill_missing_colors(colors, list(present.categories))
    return AnalysisCells(
        rows=rows.astype(np.int64),
        xy_um=slide.xy_um[rows],
        labels=present,
        colors=colors,
        tumour_type=params.tumour_type,
        lymphocyte_type=params.lymphocyte_type,
    )


def _check_named_types(slide: SlideCells, params: NicheParams, categories: list[str], notes: Notes) -> None:
    model = slide.shest.get("model")
    recorded = model.get("classes") if isinstance(model, dict) else None
    classes = [str(name) for name in recorded] if recorded is not None else []
    for option, name, role in (
        ("--tumour-type", params.tumour_type, "tumour cells"),
        ("--lymphocyte-type", params.lymphocyte_type, "lymphocytes"),
    ):
        if name in categories:
            continue
        if classes and name not in classes:
            raise InputError(
                f"Cell type {name!r} ({option}) is not a class of the model recorded in {slide.path} "
                f"(uns['shest']['model']['classes']: {', '.join(classes)}). Pass the matching name with {option}."
            )
        if slide.n_cells == 0:
            continue  # the note on the empty file covers every analysis
        found = ", ".join(categories) if categories else "none"
        notes.add(
            "cells",
            f"Cell type {name!r} ({option}) has no cell in {slide.path.name} (obs['cell_type'] categories: "
            f"{found}), so the slide is analysed as having no {role}.",
        )


def _unassigned_mask(obs: pd.DataFrame) -> np.ndarray:
    """Return obs["unassigned"] as booleans; missing values count as assigned.

    Besides booleans, 0/1 and the strings "True"/"False" (any case) are accepted,
    because some AnnData writers store flags as text or categories.

    Raises
    ------
    InputError
        The column contains other values.
    """
    if "unassigned" not in obs.columns:
        return np.zeros(len(obs), dtype=bool)
    column = obs["unassigned"]
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        values = pd.to_numeric(column, errors="coerce").fillna(0).to_numpy()
        if np.isin(values, (0, 1)).all():
            return values.astype(bool)
    else:
        text = column.astype(object).where(column.notna(), "false").astype(str).str.strip().str.lower()
        if text.isin(("true", "false", "1", "0")).all():
            return text.isin(("true", "1")).to_numpy()
    found = ", ".join(map(repr, pd.unique(column.dropna())[:5]))
    raise InputError(
        f"obs['unassigned'] must hold True/False flags, found {found}; write it as a boolean column "
        "(as `shest infer` does) or drop it."
    )


def _fill_missing_colors(colors: dict[str, str], categories: list[str]) -> None:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = colormaps["tab10"]
    for i, name in enumerate(categories):
        if name not in colors:
            colors[name] = to_hex(palette(i % 10))
