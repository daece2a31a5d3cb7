"""Names and colours of the SHEST model's outputs and the hub id of its backbone.

This module imports nothing heavy, so the CLI, the niche analysis and the output
writers read these values without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence

# Hub id of H-optimus-0, the backbone the released SHEST heads were trained on.
HOPTIMUS0_ID = "hf-hub:bioptimus/H-optimus-0"

# Class order and display colours of the released lung adenocarcinoma model.
LUNG_CLASSES = ("Alveolar_cell", "Tumor_cell_LUAD", "Macrophage", "Endothelial_cell", "Fibroblast", "Lymphocyte")
LUNG_COLORS = ("#ffc0cb", "#ff0000", "#ffa500", "#ffff00", "#008000", "#0000ff")
# Colours for classes beyond the lung model's, taken in order (matplotlib tab10).
EXTRA_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

# Class name and colour of cells whose best class probability is below the cutoff.
UNASSIGNED_NAME = "Unassigned"
UNASSIGNED_COLOR = "#a0a0a0"


def default_class_colors(classes: Sequence[str]) -> list[str]:
    """Return one hex colour per class: the lung palette for the lung classes, else :data:`EXTRA_COLORS` in turn."""
    lung = dict(zip(LUNG_CLASSES, LUNG_COLORS, strict=True))
    extra = iter(EXTRA_COLORS * (len(classes) // len(EXTRA_COLORS) + 1))
    return [lung[name] if name in lung else next(extra) for name in classes]
