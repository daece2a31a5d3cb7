"""The two SHEST heads on the backbone embedding: cell-type classifier and ZINB reconstructor.

Layer sizes, order and state-dict key names match the released checkpoints
(recognizability/shest, ``model.py``), so their weights load without renaming.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from shest.errors import CheckpointError

EMBEDDING_DIM = 1536
CLASSIFIER_HIDDEN = 1024
RECONSTRUCTOR_HIDDEN = 2048
DROPOUT = 0.3


class Classifier(nn.Module):
    """LayerNorm, two LayerNorm-ReLU-Dropout blocks (1024, 512), a linear layer and log-softmax."""

    def __init__(self, n_classes: int, in_features: int = EMBEDDING_DIM, hidden: int = CLASSIFIER_HIDDEN) -> None:
        super().__init__()
        self.norm0 = nn.LayerNorm(in_features)
        self.fc1 = nn.Linear(in_features, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.dropout1 = nn.Dropout(DROPOUT)
        self.fc2 = nn.Linear(hidden, hidden // 2)
        self.norm2 = nn.LayerNorm(hidden // 2)
        self.dropout2 = nn.Dropout(DROPOUT)
        self.fc3 = nn.Linear(hidden // 2, n_classes)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Return log-probabilities of the classes, (N, n_classes)."""
        x = self.norm0(embedding)
        x = self.dropout1(F.relu(self.norm1(self.fc1(x))))
        x = self.dropout2(F.relu(self.norm2(self.fc2(x))))
        return F.log_softmax(self.fc3(x), dim=1)


class Reconstructor(nn.Module):
    """Zero-inflated negative binomial (ZINB) decoder: mean, overdispersion and zero-inflation per gene."""

    def __init__(self, n_genes: int, in_features: int = EMBEDDING_DIM, hidden: int = RECONSTRUCTOR_HIDDEN) -> None:
        super().__init__()
        self.norm0 = nn.LayerNorm(in_features)
        self.fc1 = nn.Linear(in_features, hidden)
        self.norm1 = nn.LayerNorm(hidden)
        self.dropout1 = nn.Dropout(DROPOUT)
        self.fc2 = nn.Linear(hidden, hidden * 2)
        self.norm2 = nn.LayerNorm(hidden * 2)
        self.dropout2 = nn.Dropout(DROPOUT)
        self.fc_mean = nn.Linear(hidden * 2, n_genes)
        self.fc_overdispersion = nn.Linear(hidden * 2, n_genes)
        self.fc_probability = nn.Linear(hidden * 2, n_genes)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the ZINB mean μ (softplus), overdispersion θ (softplus) and zero probability π (sigmoid)."""
        x = self.norm0(embedding)
        x = self.dropout1(F.relu(self.norm1(self.fc1(x))))
        x = self.dropout2(F.relu(self.norm2(self.fc2(x))))
        mean = F.softplus(self.fc_mean(x))
        overdispersion = F.softplus(self.fc_overdispersion(x))
        probability = torch.sigmoid(self.fc_probability(x))
        return mean, overdispersion, probability


def expected_counts(mean: torch.Tensor, zero_probability: torch.Tensor) -> torch.Tensor:
    """Return ``round((1 - π) μ)`` as int32, the expression SHEST reports per cell and gene."""
    return torch.round((1.0 - zero_probability.float()) * mean.float()).to(torch.int32)


def head_sizes(classifier: Mapping[str, torch.Tensor], reconstructor: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Read embedding width, class count and gene count from the two state dicts."""
    _require_keys("classifier", classifier, ("norm0.weight", "fc3.weight"))
    _require_keys("reconstructor", reconstructor, ("norm0.weight", "fc_mean.weight"))
    return {
        "embedding_dim": int(classifier["norm0.weight"].shape[0]),
        "reconstructor_embedding_dim": int(reconstructor["norm0.weight"].shape[0]),
        "n_classes": int(classifier["fc3.weight"].shape[0]),
        "n_genes": int(reconstructor["fc_mean.weight"].shape[0]),
    }


def check_head_shapes(
    classifier: Mapping[str, torch.Tensor],
    reconstructor: Mapping[str, torch.Tensor],
    n_classes: int,
    n_genes: int,
    embedding_dim: int | None = None,
    source: str = "checkpoint",
) -> None:
    """Raise :class:`CheckpointError` unless the heads fit the classes, genes and backbone width.

    The messages give both numbers and the usual cause.
    """
    sizes = head_sizes(classifier, reconstructor)
    if sizes["embedding_dim"] != sizes["reconstructor_embedding_dim"]:
        raise CheckpointError(
            f"{source}: the classifier expects {sizes['embedding_dim']}-d embeddings but the reconstructor "
            f"{sizes['reconstructor_embedding_dim']}-d; the two heads do not belong together."
        )
    if sizes["n_classes"] != n_classes:
        raise CheckpointError(
            f"{source}: the classifier has {sizes['n_classes']} outputs but {n_classes} class names were given; "
            "give one name per output in the model's order (--classes)."
        )
    if sizes["n_genes"] != n_genes:
        raise CheckpointError(
            f"{source}: the reconstructor has {sizes['n_genes']} gene outputs but the gene panel lists {n_genes} genes; "
            "use the panel file the checkpoint was trained with (Xenium Prime 5K or multi-tissue v1)."
        )
    if embedding_dim is not None and sizes["embedding_dim"] != embedding_dim:
        raise CheckpointError(
            f"{source}: the heads expect {sizes['embedding_dim']}-d embeddings but the backbone produces "
            f"{embedding_dim}-d ones; use the backbone the heads were trained on (H-optimus-0 gives 1536)."
        )


def build_heads(
    classifier_state: Mapping[str, torch.Tensor],
    reconstructor_state: Mapping[str, torch.Tensor],
    source: str = "checkpoint",
) -> tuple[Classifier, Reconstructor]:
    """Create both heads sized from their state dicts and load the weights strictly."""
    sizes = head_sizes(classifier_state, reconstructor_state)
    classifier = Classifier(sizes["n_classes"], sizes["embedding_dim"], int(classifier_state["fc1.weight"].shape[0]))
    reconstructor = Reconstructor(
        sizes["n_genes"], sizes["reconstructor_embedding_dim"], int(reconstructor_state["fc1.weight"].shape[0])
    )
    _load_strict(classifier, classifier_state, f"{source} (classifier)")
    _load_strict(reconstructor, reconstructor_state, f"{source} (reconstructor)")
    return classifier.eval(), reconstructor.eval()


def _require_keys(name: str, state: Mapping[str, torch.Tensor], keys: tuple[str, ...]) -> None:
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(
            f"The {name} state dict lacks {', '.join(missing)} (it has {', '.join(sorted(state)[:8]) or 'no keys'}); "
            "it is not a SHEST head."
        )


def _load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: keys do not match the SHEST head. Missing: {', '.join(missing) or 'none'}; "
            f"unexpected: {', '.join(unexpected) or 'none'}."
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}."
            )
    module.load_state_dict(state, strict=True)
