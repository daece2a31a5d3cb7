"""Sanity warning for an implausibly low nucleus density, in the log, the MultiQC table and the metadata."""

from __future__ import annotations

import logging

import numpy as np
import shapely

from shest.segmentation.features import MEASUREMENT_COLUMNS
from shest.segmentation.outputs import (
    MIN_PLAUSIBLE_NUCLEI_PER_MM2,
    SlideOutputPaths,
    density_warnings,
    write_slide_outputs,
)
from shest.segmentation.table import TABLE_FORMAT, build_table, read_cell_table


def table_of(count: int):
    """A cell table of ``count`` round nuclei on a row."""
    columns = {name: np.zeros(count) for name in MEASUREMENT_COLUMNS}
    columns["x"] = np.arange(count, dtype=float) * 20 + 10
    columns["y"] = np.full(count, 10.0)
    columns["area_um2"] = np.full(count, 30.0)
    columns["tile_id"] = np.zeros(count, dtype=np.int64)
    columns["geometry"] = np.array(
        [shapely.Point(x, 10.0).buffer(6, quad_segs=4) for x in columns["x"]], dtype=object
    )
    return build_table(columns)


def metadata_for(tissue_mm2: float, backend: str = "watershed") -> dict:
    return {
        "format": TABLE_FORMAT,
        "sample": "S",
        "slide": "s.svs",
        "mpp": 0.5,
        "segmentation_mpp": 0.5,
        "segmentation": {"backend": backend, "threshold_od": 0.034, "threshold_source": "min(otsu, triangle)"},
        "plan": {"tiles": 4, "chunks": 1, "tissue_area_mm2": tissue_mm2},
        "chunk": None,
        "chunks_included": [0],
        "version": "test",
    }


def test_low_density_warns_with_figure():
    # 89 nuclei on 0.366 mm², what the TMA core gave when glass set the threshold.
    warnings = density_warnings(table_of(89), metadata_for(0.366))
    assert len(warnings) == 1
    assert "Only 243 nuclei per mm² of tissue (89 nuclei on 0.366 mm²)" in warnings[0]


def test_low_density_warning_names_threshold():
    warnings = density_warnings(table_of(89), metadata_for(0.366))
    assert "hematoxylin OD 0.034" in warnings[0]
    assert "--threshold-od" in warnings[0]


def test_low_density_warning_for_cellpose_names_model():
    warnings = density_warnings(table_of(10), metadata_for(0.5, backend="cellpose"))
    assert "--cellpose-model" in warnings[0]


def test_plausible_density_is_quiet():
    tissue_mm2 = 100 / (2 * MIN_PLAUSIBLE_NUCLEI_PER_MM2)
    assert density_warnings(table_of(100), metadata_for(tissue_mm2)) == []


def test_tiny_tissue_is_not_judged():
    assert density_warnings(table_of(0), metadata_for(0.001)) == []


def test_empty_plan_is_not_judged():
    assert density_warnings(table_of(0), metadata_for(0.0)) == []


def mqc_row(path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return dict(zip(lines[0].split("\t"), lines[1].split("\t")))


def test_warning_reaches_outputs_and_log(tmp_path, caplog):
    paths = SlideOutputPaths.for_sample(tmp_path, "S", gzip=False)
    with caplog.at_level(logging.WARNING, logger="shest.segmentation.outputs"):
        write_slide_outputs(table_of(89), metadata_for(0.366), paths, "S")
    row = mqc_row(paths.mqc)
    _, metadata = read_cell_table(paths.cells)
    assert row["warnings"] == "1"
    assert row["warning"].startswith("Only 243 nuclei per mm²")
    assert metadata["warnings"] == [row["warning"]]
    assert "Only 243 nuclei per mm²" in caplog.text


def test_dense_outputs_have_no_warning(tmp_path):
    paths = SlideOutputPaths.for_sample(tmp_path, "S", gzip=False)
    write_slide_outputs(table_of(100), metadata_for(0.02), paths, "S")
    row = mqc_row(paths.mqc)
    assert row["warnings"] == "0"
    assert row["warning"] == ""
