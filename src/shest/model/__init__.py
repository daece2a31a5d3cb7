"""The SHEST model: frozen backbone, classifier and ZINB heads, checkpoints, demo model, prediction."""

from shest.model.backbone import HOPTIMUS0_ID, Backbone, load_backbone
from shest.model.checkpoint import (
    LUNG_CLASSES,
    LUNG_COLORS,
    HeadCheckpoint,
    load_checkpoint,
    read_panel,
    save_shest_checkpoint,
)
from shest.model.demo import build_demo_model
from shest.model.network import ShestModel, ShestNetwork, load_model
from shest.model.predict import Predictions, choose_device, predict_cells

__all__ = [
    "HOPTIMUS0_ID",
    "LUNG_CLASSES",
    "LUNG_COLORS",
    "Backbone",
    "HeadCheckpoint",
    "Predictions",
    "ShestModel",
    "ShestNetwork",
    "build_demo_model",
    "choose_device",
    "load_backbone",
    "load_checkpoint",
    "load_model",
    "predict_cells",
    "read_panel",
    "save_shest_checkpoint",
]
