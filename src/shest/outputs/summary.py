"""Cell-type summary for MultiQC (``S_celltypes_mqc.tsv``, section ``shest_celltypes``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from shest.model.constants import UNASSIGNED_NAME
from shest.report.multiqc import write_mqc_table

SECTION_ID = "shest_celltypes"


def celltype_counts(
    class_index: np.ndarray, probability: np.ndarray, classes: Sequence[str], probability_cutoff: float
) -> dict[str, int]:
    """Count assigned cells per class; cells below the cutoff count only as unassigned."""
    assigned = np.asarray(probability) >= probability_cutoff
    counts = np.bincount(np.asarray(class_index, dtype=np.int64)[assigned], minlength=len(classes))
    return {name: int(count) for name, count in zip(classes, counts)}


def write_celltype_summary(
    path: str | os.PathLike,
    sample: str,
    class_index: np.ndarray,
    probability: np.ndarray,
    classes: Sequence[str],
    probability_cutoff: float,
    demo: bool,
    model_name: str,
) -> dict[str, object]:
    """Write one MultiQC table row with cell counts and percentages per type; return the row."""
    n_cells = int(np.asarray(class_index).size)
    per_class = celltype_counts(class_index, probability, classes, probability_cutoff)
    n_assigned = sum(per_class.values())
    row: dict[str, object] = {
        "cells": n_cells,
        "assigned": n_assigned,
        "unassigned": n_cells - n_assigned,
        "unassigned_pct": 100.0 * (n_cells - n_assigned) / n_cells if n_cells else 0.0,
    }
    headers: dict[str, dict[str, object]] = {
        "cells": {"title": "Cells", "description": "Nuclei with a prediction", "format": "{:,.0f}"},
        "assigned": {"title": "Assigned", "description": f"Probability >= {probability_cutoff:g}", "format": "{:,.0f}"},
        "unassigned": {
            "title": UNASSIGNED_NAME,
            "description": f"Probability < {probability_cutoff:g}",
            "format": "{:,.0f}",
        },
        "unassigned_pct": {"title": "% unassigned", "suffix": "%", "min": 0, "max": 100, "format": "{:,.1f}"},
    }
    for name, count in per_class.items():
        row[name] = count
        row[f"{name}_pct"] = 100.0 * count / n_cells if n_cells else 0.0
        headers[name] = {"title": name, "description": f"Cells assigned to {name}", "format": "{:,.0f}"}
        headers[f"{name}_pct"] = {
            "title": f"% {name}",
            "description": f"{name} as a percentage of all cells",
            "suffix": "%",
            "min": 0,
            "max": 100,
            "format": "{:,.1f}",
        }
    row["demo"] = bool(demo)
    row["model"] = model_name
    headers["demo"] = {"title": "Demo model", "description": "yes: random stand-in network, not biological predictions"}
    headers["model"] = {"title": "Model", "description": "Backbone and checkpoint used"}

    description = f"Predicted cell types per slide (probability cutoff {probability_cutoff:g})."
    if demo:
        description = "DEMO MODEL (random weights): these counts are not biological predictions. " + description
    write_mqc_table(
        path,
        section_id=SECTION_ID,
        section_name="Cell types",
        description=description,
        rows={sample: row},
        columns=list(row),
        headers=headers,
    )
    return row
