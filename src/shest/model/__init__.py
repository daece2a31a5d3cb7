"""The SHEST model: frozen backbone, classifier and ZINB heads, checkpoints, demo model, prediction.

The names of :mod:`shest.model.constants` are imported at once. Every other name is
imported from its submodule on first use, because those submodules import torch:
``from shest.model.constants import LUNG_CLASSES`` therefore stays light, while
``from shest.model import load_model`` works as before.
"""

from __future__ import annotations

import importlib

from shest.model.constants import HOPTIMUS0_ID, LUNG_CLASSES, LUNG_COLORS, UNASSIGNED_COLOR, UNASSIGNED_NAME

# Name -> submodule that defines it.
_TORCH_NAMES = {
    "Backbone": "backbone",
    "load_backbone": "backbone",
    "HeadCheckpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_panel": "checkpoint",
    "save_shest_checkpoint": "checkpoint",
    "build_demo_model": "demo",
    "ShestModel": "network",
    "ShestNetwork": "network",
    "load_model": "network",
    "Predictions": "predict",
    "choose_device": "predict",
    "predict_cells": "predict",
}

__all__ = [
    "HOPTIMUS0_ID",
    "LUNG_CLASSES",
    "LUNG_COLORS",
    "UNASSIGNED_COLOR",
    "UNASSIGNED_NAME",
    *_TORCH_NAMES,
]


def __getattr__(name: str):
    submodule = _TORCH_NAMES.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_TORCH_NAMES})
