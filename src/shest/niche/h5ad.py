"""Partial reading of the inference AnnData and writing of ``S.niche.h5ad``.

A whole-slide ``.h5ad`` contains a 1536-wide embedding per cell (about 3 GB at one
million cells) that the niche analysis never uses. The elements it needs (``obs``,
the coordinates, ``uns``, gene blocks of ``X``) are therefore read one by one with
:func:`anndata.io.read_elem`, and the output is a byte copy of the input to which the
new ``obs`` columns, ``obsp`` graph and ``uns`` results are added with
:func:`anndata.io.write_elem`. Neither step loads the whole file into memory, and
the input file is only opened for reading.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shest.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class SlideCells:
    """The parts of an inference AnnData that the niche analysis reads."""

    path: Path
    obs: pd.DataFrame
    xy_um: np.ndarray
    xy_px: np.ndarray
    mpp: float | None
    shest: dict
    colors: dict[str, str]
    var_names: pd.Index
    x_shape: tuple[int, int]

    @property
    def demo(self) -> bool:
        return bool(self.shest.get("demo", False))

    @property
    def n_cells(self) -> int:
        return len(self.obs)


def read_slide_cells(path: str | Path) -> SlideCells:
    """Read ``obs``, coordinates, ``var_names`` and ``uns`` metadata of an inference ``.h5ad``.

    Raises
    ------
    InputError
        The file is missing, is not an AnnData ``.h5ad``, or lacks ``obs["cell_type"]``
        or cell coordinates.
    """
    import h5py
    from anndata.io import read_elem

    path = Path(path)
    if not path.is_file():
        raise InputError(f"AnnData file not found: {path}. Give the S.h5ad written by `shest infer` or `shest run`.")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(
            f"{path} is not a readable .h5ad (HDF5) file: {exc}. Give the S.h5ad written by `shest infer`."
        ) from None

    with handle as f:
        for key in ("obs", "var"):
            if key not in f:
                raise InputError(f"{path} has no '{key}' group, so it is not an AnnData .h5ad file.")
        obs = read_elem(f["obs"])
        var_names = pd.Index(read_elem(f["var"]).index.astype(str))
        shest = _read_optional(f, "uns/shest", {})
        colors = _read_optional(f, "uns/cell_type_colors", None)
        obsm = f.get("obsm")
        xy_px = read_elem(obsm["spatial"]) if obsm is not None and "spatial" in obsm else None
        xy_um = read_elem(obsm["spatial_um"]) if obsm is not None and "spatial_um" in obsm else None
        x_shape = _x_shape(f)

    if "cell_type" not in obs.columns:
        raise InputError(
            f"{path} has no obs['cell_type'] column; the niche analysis needs the per-cell types "
            "written by `shest infer`."
        )
    obs["cell_type"] = _as_categorical(obs["cell_type"], shest, path)
    mpp = _mpp(shest)
    xy_um = _coordinates_um(path, xy_um, xy_px, mpp, len(obs))
    if xy_px is None:
        xy_px = xy_um / mpp if mpp else xy_um.copy()
    categories = list(obs["cell_type"].cat.categories)
    color_map: dict[str, str] = {}
    if colors is not None and len(colors) == len(categories):
        color_map = {name: str(color) for name, color in zip(categories, colors, strict=True)}
    return SlideCells(
        path=path,
        obs=obs,
        xy_um=np.asarray(xy_um, dtype=np.float64),
        xy_px=np.asarray(xy_px, dtype=np.float64),
        mpp=mpp,
        shest=dict(shest),
        colors=color_map,
        var_names=var_names,
        x_shape=x_shape,
    )


class ExpressionReader:
    """Read gene blocks of ``X`` for a subset of cells, without loading all of ``X`` when it is dense.

    A dense ``X`` is read block by block from the HDF5 dataset. A sparse ``X`` (CSR or
    CSC group) is read once, in its sparse form, and sliced in memory.
    """

    def __init__(self, path: str | Path, rows: np.ndarray) -> None:
        import h5py

        self._rows = np.asarray(rows)
        self._dense = False
        self._sparse = None
        self.n_genes = 0
        self._file = h5py.File(path, "r")
        try:
            self._open_x()
        except BaseException:
            self._file.close()
            raise

    def _open_x(self) -> None:
        import h5py

        if "X" not in self._file:  # AnnData allows X to be absent
            return
        node = self._file["X"]
        self._dense = isinstance(node, h5py.Dataset)
        if not self._dense:
            from anndata.io import read_elem

            self._sparse = read_elem(node).tocsc()
        self.n_genes = int(node.shape[1] if self._dense else self._sparse.shape[1])

    def block(self, start: int, stop: int) -> np.ndarray:
        """Return genes ``start:stop`` of the selected cells as a dense float64 array."""
        if self._dense:
            values = self._file["X"][:, start:stop]
            return np.asarray(values[self._rows], dtype=np.float64)
        return self._sparse[:, start:stop][self._rows].toarray().astype(np.float64)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ExpressionReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def write_niche_h5ad(
    source: str | Path,
    target: str | Path,
    obs_columns: pd.DataFrame,
    obsp: Mapping[str, Any],
    uns: Mapping[str, Any],
    replaced: Mapping[str, tuple[str, ...]] | None = None,
) -> None:
    """Write ``target`` as a copy of ``source`` with new ``obs`` columns, ``obsp`` and ``uns`` entries.

    Parameters
    ----------
    obs_columns
        Columns to add to (or replace in) ``obs``; its index must equal the input's.
    obsp
        Square sparse matrices, one row per cell of the input.
    uns
        Entries added to ``uns``; values are made HDF5-writable (``None`` dropped,
        lists turned into arrays).
    replaced
        Keys of ``obs``, ``obsp`` and ``uns`` that belong to this analysis. Those
        present in the input (from an earlier run) are removed first, so no stale
        result survives next to the new ones.
    """
    import h5py
    from anndata.io import read_elem, write_elem

    replaced = replaced or {}
    shutil.copyfile(source, target)
    with h5py.File(target, "r+") as f:
        obs = read_elem(f["obs"])
        if not obs.index.equals(obs_columns.index):
            raise ValueError("obs_columns must have the same index as the input obs")
        obs = obs.drop(columns=[c for c in replaced.get("obs", ()) if c in obs.columns])
        for column in obs_columns.columns:
            obs[column] = obs_columns[column]
        del f["obs"]
        write_elem(f, "obs", obs)

        for group, entries in (("obsp", obsp), ("uns", uns)):
            if group not in f:
                write_elem(f, group, {})
            for key in (*replaced.get(group, ()), *entries):
                if key in f[group]:
                    del f[group][key]
            for key, value in entries.items():
                write_elem(f[group], key, value if group == "obsp" else to_uns(value))


def to_uns(value: Any) -> Any:
    """Return ``value`` in a form that :func:`anndata.io.write_elem` stores in ``uns``."""
    if isinstance(value, Mapping):
        return {str(key): to_uns(item) for key, item in value.items() if item is not None}
    if isinstance(value, pd.DataFrame):
        frame = value.copy()
        for column in frame.columns:
            if frame[column].dtype != object:
                continue
            present = frame[column].dropna()
            if len(present) and all(isinstance(item, bool | int | float | np.number) for item in present):
                frame[column] = pd.to_numeric(frame[column], errors="coerce")
            else:
                frame[column] = frame[column].fillna("").astype(str)
        return frame
    if isinstance(value, list | tuple):
        if all(isinstance(item, str) for item in value):
            return np.array(value, dtype=object)
        return np.asarray(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_optional(f, key: str, default: Any) -> Any:
    from anndata.io import read_elem

    if key not in f:
        return default
    try:
        return read_elem(f[key])
    except Exception as exc:  # an unreadable optional entry must not stop the analysis
        log.warning("Could not read %s from the input AnnData (%s); continuing without it.", key, exc)
        return default


def _x_shape(f) -> tuple[int, int]:
    if "X" not in f:
        return (0, 0)
    node = f["X"]
    if hasattr(node, "shape"):
        return tuple(int(v) for v in node.shape)
    shape = node.attrs.get("shape")
    return (int(shape[0]), int(shape[1])) if shape is not None else (0, 0)


def _as_categorical(column: pd.Series, shest: Mapping, path: Path) -> pd.Categorical:
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.astype("category")
    # `shest infer` records the class order as uns["shest"]["model"]["classes"].
    recorded = shest.get("model", {}).get("classes")
    class_names = [str(name) for name in recorded] if recorded is not None else []
    values = column.astype(str)
    categories = class_names if class_names and set(values) <= set(class_names) else sorted(set(values))
    log.warning(
        "%s: obs['cell_type'] is not categorical; using categories %s (%s).",
        path,
        categories,
        "model class order from uns['shest']" if categories == class_names else "sorted names",
    )
    return pd.Categorical(values, categories=categories)


def _mpp(shest: Mapping) -> float | None:
    mpp = shest.get("mpp")
    try:
        mpp = float(mpp)
    except (TypeError, ValueError):
        return None
    return mpp if np.isfinite(mpp) and mpp > 0 else None


def _coordinates_um(path: Path, xy_um, xy_px, mpp: float | None, n_cells: int) -> np.ndarray:
    if xy_um is None:
        if xy_px is None:
            raise InputError(
                f"{path} has neither obsm['spatial_um'] nor obsm['spatial']; the niche analysis needs cell "
                "centroids. Re-run `shest infer` to write them."
            )
        if mpp is None:
            raise InputError(
                f"{path} has no obsm['spatial_um'] and no µm/px in uns['shest']['mpp'], so pixel coordinates "
                "cannot be converted to µm. Re-run `shest infer`, which records both."
            )
        xy_um = np.asarray(xy_px, dtype=np.float64) * mpp
    xy_um = np.asarray(xy_um, dtype=np.float64)
    if xy_um.shape != (n_cells, 2):
        raise InputError(
            f"{path}: obsm['spatial_um'] has shape {xy_um.shape}, expected ({n_cells}, 2) (x, y in µm per cell)."
        )
    if not np.all(np.isfinite(xy_um)):
        raise InputError(f"{path}: obsm['spatial_um'] contains NaN or infinite coordinates; re-run `shest infer`.")
    return xy_um
