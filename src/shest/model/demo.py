"""The demo model: a tiny seeded ViT and SHEST heads built at run time, for tests and trials.

It takes the same 224 x 224 quadruple tiles and returns the same outputs as the real
model (class-token embedding, class log-probabilities, ZINB parameters for a gene
list), so every stage downstream runs unchanged. Its weights are random: its cell
types and expression carry no biological meaning, and every output of a demo run is
marked as such. Nothing is downloaded or stored.
"""

from __future__ import annotations

import logging

import torch

from shest.model.checkpoint import default_normalization, default_tile_parameters
from shest.model.constants import LUNG_CLASSES, LUNG_COLORS
from shest.model.heads import Classifier, Reconstructor
from shest.model.network import ShestModel, ShestNetwork

log = logging.getLogger(__name__)

# Seed picked among the first 40 because its random heads give several classes on H&E;
# with most seeds nearly every cell falls in one class, which exercises little downstream.
DEMO_SEED = 5
DEMO_EMBEDDING_DIM = 64
# Marker genes of the six lung classes, so the demo's expression table looks familiar.
DEMO_GENES = (
    "SFTPC", "SFTPB", "AGER",
    "EPCAM", "NKX2-1", "CEACAM5", "MKI67",
    "CD68", "MARCO", "C1QA",
    "PECAM1", "VWF", "CLDN5",
    "COL1A1", "DCN", "LUM",
    "PTPRC", "CD3E", "CD8A", "MS4A1",
)  # fmt: skip
DEMO_ID = "shest-demo-vit"
# Scale of the classifier's last layer: random heads otherwise give near-uniform class
# probabilities, and every cell of a demo map would be unassigned at the 0.7 cutoff.
DEMO_LOGIT_GAIN = 20.0


class CentredBackbone(torch.nn.Module):
    """A network whose embedding is measured from that of a blank tile.

    All H&E tiles share most of their colour, so a randomly initialised ViT gives
    nearly the same embedding for every cell. Subtracting the embedding of a blank tile
    keeps the part that differs between cells. The blank tile is all zeros after
    normalisation, which is the backbone's mean colour.
    """

    def __init__(self, network: torch.nn.Module, tile_px: int = 224) -> None:
        super().__init__()
        self.network = network
        self.num_features = int(network.num_features)
        with torch.no_grad():
            reference = network.eval()(torch.zeros(1, 3, tile_px, tile_px))
        self.register_buffer("reference", reference)

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.network(tiles) - self.reference.to(tiles.dtype)


def build_demo_backbone(embedding_dim: int = DEMO_EMBEDDING_DIM) -> torch.nn.Module:
    """Return a two-block ViT (patch 16, four register tokens) with H-optimus-0's input and output contract."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=224,
        patch_size=16,
        embed_dim=embedding_dim,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
        reg_tokens=4,
        no_embed_class=True,
        num_classes=0,
        global_pool="token",
        dynamic_img_size=True,
    )


def build_demo_model(seed: int = DEMO_SEED) -> ShestModel:
    """Build the demo model from ``seed``; the same seed gives the same weights.

    The global random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = CentredBackbone(build_demo_backbone())
        classifier = Classifier(len(LUNG_CLASSES), DEMO_EMBEDDING_DIM)
        reconstructor = Reconstructor(len(DEMO_GENES), DEMO_EMBEDDING_DIM)
    with torch.no_grad():
        classifier.fc3.weight.mul_(DEMO_LOGIT_GAIN)
    network = ShestNetwork(backbone, classifier, reconstructor).eval().requires_grad_(False)
    log.warning(
        "DEMO model: a small ViT with random seeded weights (seed %d) replaces H-optimus-0 and the SHEST heads. "
        "Its cell types and expression are not biological predictions.",
        seed,
    )
    return ShestModel(
        network=network,
        classes=list(LUNG_CLASSES),
        colors=list(LUNG_COLORS),
        genes=list(DEMO_GENES),
        embedding_dim=DEMO_EMBEDDING_DIM,
        demo=True,
        provenance={
            "backbone": DEMO_ID,
            "backbone_architecture": "VisionTransformer(patch 16, dim 64, depth 2, 4 register tokens)",
            "backbone_weights_file": "",
            "checkpoint_backbone": DEMO_ID,
            "checkpoint_file": "",
            "checkpoint_sha256": "",
            "checkpoint_layout": f"demo (random weights, seed {seed})",
        },
        normalization=default_normalization(),
        tile=default_tile_parameters(),
    )
