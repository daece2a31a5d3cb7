"""A SHEST model ready to run: backbone and heads with the labels of their outputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shest.model.backbone import HOPTIMUS0_ID, Backbone, load_backbone
from shest.model.checkpoint import HeadCheckpoint, default_normalization, default_tile_parameters, load_checkpoint
from shest.model.heads import Classifier, Reconstructor, build_heads, check_head_shapes

log = logging.getLogger(__name__)


class ShestNetwork(nn.Module):
    """Backbone followed by the classifier and the ZINB reconstructor on its embedding."""

    def __init__(self, backbone: nn.Module, classifier: Classifier, reconstructor: Reconstructor) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.reconstructor = reconstructor

    def forward(self, tiles: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Return embedding, class log-probabilities, ZINB mean, overdispersion and zero probability."""
        embedding = self.backbone(tiles)
        log_probability = self.classifier(embedding)
        mean, overdispersion, zero_probability = self.reconstructor(embedding)
        return embedding, log_probability, mean, overdispersion, zero_probability


@dataclass
class ShestModel:
    """A frozen network in eval mode and the names, colours and provenance of its outputs."""

    network: ShestNetwork
    classes: list[str]
    colors: list[str]
    genes: list[str]
    embedding_dim: int
    demo: bool
    provenance: dict[str, Any]
    normalization: dict[str, list[float]] = field(default_factory=default_normalization)
    tile: dict[str, float] = field(default_factory=default_tile_parameters)

    def describe(self) -> dict[str, Any]:
        """Return JSON-ready model provenance for outputs (AnnData ``uns``, GeoJSON, logs)."""
        return {
            **self.provenance,
            "demo": self.demo,
            "classes": list(self.classes),
            "n_genes": len(self.genes),
            "embedding_dim": self.embedding_dim,
        }


def assemble_model(backbone: Backbone, checkpoint: HeadCheckpoint) -> ShestModel:
    """Combine a loaded backbone and head checkpoint, checking the embedding width."""
    check_head_shapes(
        checkpoint.classifier,
        checkpoint.reconstructor,
        len(checkpoint.classes),
        len(checkpoint.genes),
        backbone.embedding_dim,
        source=str(checkpoint.path or "checkpoint"),
    )
    if backbone.source != checkpoint.backbone:
        log.warning(
            "The checkpoint was trained on backbone %s but %s is loaded; predictions are only valid on the same backbone.",
            checkpoint.backbone,
            backbone.source,
        )
    classifier, reconstructor = build_heads(checkpoint.classifier, checkpoint.reconstructor, str(checkpoint.path))
    network = ShestNetwork(backbone.module, classifier, reconstructor).eval().requires_grad_(False)
    provenance = {
        "backbone": backbone.source,
        "backbone_architecture": backbone.architecture,
        "backbone_weights_file": backbone.describe()["weights_file"],
        "checkpoint_backbone": checkpoint.backbone,
        "checkpoint_file": checkpoint.path.name if checkpoint.path else "",
        "checkpoint_sha256": checkpoint.sha256 or "",
        "checkpoint_layout": checkpoint.layout,
    }
    return ShestModel(
        network=network,
        classes=list(checkpoint.classes),
        colors=list(checkpoint.colors),
        genes=list(checkpoint.genes),
        embedding_dim=backbone.embedding_dim,
        demo=False,
        provenance=provenance,
        normalization=checkpoint.normalization,
        tile=checkpoint.tile,
    )


def load_model(
    checkpoint: str | Path | None = None,
    backbone: str | None = None,
    panel: str | Path | None = None,
    classes: list[str] | None = None,
    panel_column: str | None = None,
    backbone_architecture: str | None = None,
    demo: bool = False,
) -> ShestModel:
    """Load the SHEST model, or build the demo model when ``demo`` is true.

    Parameters
    ----------
    checkpoint
        Head weights: the authors' released ``.pth`` (needs ``panel``) or a
        self-describing file from ``shest convert-checkpoint``.
    backbone
        Backbone specification (see :func:`shest.model.backbone.load_backbone`);
        defaults to the one the checkpoint names, else H-optimus-0.
    panel, panel_column
        Gene panel CSV for a released checkpoint, and its gene column.
    classes
        Class names in output order for a released checkpoint (default: the six
        lung classes).
    backbone_architecture
        timm architecture of a bare backbone weights file.
    demo
        Build the small seeded stand-in network instead (no weights needed).
    """
    if demo:
        from shest.model.demo import build_demo_model

        return build_demo_model()
    if checkpoint is None:
        raise ValueError("load_model needs a checkpoint unless demo=True")
    heads = load_checkpoint(checkpoint, panel=panel, classes=classes, panel_column=panel_column, backbone=backbone)
    log.info(
        "Checkpoint %s (%s layout): %d classes, %d genes, %d-d embedding",
        checkpoint,
        heads.layout,
        len(heads.classes),
        len(heads.genes),
        heads.embedding_dim,
    )
    loaded = load_backbone(backbone or heads.backbone or HOPTIMUS0_ID, architecture=backbone_architecture)
    return assemble_model(loaded, heads)
