"""SHEST heads: released key names and layer sizes, shape checks, counts, safe loading."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from shest.errors import CheckpointError
from shest.model.checkpoint import load_released_checkpoint
from shest.model.heads import (
    Classifier,
    Reconstructor,
    build_heads,
    check_head_shapes,
    expected_counts,
)


# Parameter names and shapes of the released heads for H-optimus-0 (1536-d), 6 classes, G genes.
def released_classifier_shapes(n_classes: int = 6, width: int = 1536) -> dict[str, tuple[int, ...]]:
    return {
        "norm0.weight": (width,),
        "norm0.bias": (width,),
        "fc1.weight": (1024, width),
        "fc1.bias": (1024,),
        "norm1.weight": (1024,),
        "norm1.bias": (1024,),
        "fc2.weight": (512, 1024),
        "fc2.bias": (512,),
        "norm2.weight": (512,),
        "norm2.bias": (512,),
        "fc3.weight": (n_classes, 512),
        "fc3.bias": (n_classes,),
    }


def released_reconstructor_shapes(n_genes: int, width: int = 1536) -> dict[str, tuple[int, ...]]:
    return {
        "norm0.weight": (width,),
        "norm0.bias": (width,),
        "fc1.weight": (2048, width),
        "fc1.bias": (2048,),
        "norm1.weight": (2048,),
        "norm1.bias": (2048,),
        "fc2.weight": (4096, 2048),
        "fc2.bias": (4096,),
        "norm2.weight": (4096,),
        "norm2.bias": (4096,),
        "fc_mean.weight": (n_genes, 4096),
        "fc_mean.bias": (n_genes,),
        "fc_overdispersion.weight": (n_genes, 4096),
        "fc_overdispersion.bias": (n_genes,),
        "fc_probability.weight": (n_genes, 4096),
        "fc_probability.bias": (n_genes,),
    }


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) * 0.02 for name, shape in shapes.items()}


def test_classifier_keys_and_shapes_match_release():
    state = Classifier(6).state_dict()
    assert {key: tuple(value.shape) for key, value in state.items()} == released_classifier_shapes()


def test_reconstructor_keys_and_shapes_match_release():
    state = Reconstructor(377).state_dict()
    assert {key: tuple(value.shape) for key, value in state.items()} == released_reconstructor_shapes(377)


def test_state_dict_with_released_names_loads():
    classifier_state = random_state(released_classifier_shapes())
    reconstructor_state = random_state(released_reconstructor_shapes(12), seed=1)
    classifier, reconstructor = build_heads(classifier_state, reconstructor_state)
    assert torch.equal(classifier.fc3.weight, classifier_state["fc3.weight"])
    assert torch.equal(reconstructor.fc_probability.bias, reconstructor_state["fc_probability.bias"])
    assert not classifier.training


def test_head_outputs_are_distributions():
    classifier, reconstructor = build_heads(
        random_state(released_classifier_shapes()), random_state(released_reconstructor_shapes(12), seed=1)
    )
    embedding = torch.randn(5, 1536)
    with torch.inference_mode():
        log_probability = classifier(embedding)
        mean, overdispersion, zero_probability = reconstructor(embedding)
    assert torch.allclose(log_probability.exp().sum(dim=1), torch.ones(5), atol=1e-5)
    assert mean.shape == (5, 12)
    assert bool((mean >= 0).all())
    assert bool((overdispersion >= 0).all())
    assert bool(((zero_probability > 0) & (zero_probability < 1)).all())


def test_dropout_inactive_in_eval():
    classifier, _ = build_heads(
        random_state(released_classifier_shapes()), random_state(released_reconstructor_shapes(4))
    )
    embedding = torch.randn(3, 1536)
    with torch.inference_mode():
        assert torch.equal(classifier(embedding), classifier(embedding))


def test_unknown_key_rejected_with_names():
    classifier_state = random_state(released_classifier_shapes())
    classifier_state["bn0.weight"] = classifier_state.pop("norm0.weight")
    with pytest.raises(CheckpointError, match="norm0.weight"):
        build_heads(classifier_state, random_state(released_reconstructor_shapes(4)))


def test_class_count_mismatch_shows_numbers():
    with pytest.raises(CheckpointError, match=r"6 outputs but 5 class names"):
        check_head_shapes(
            random_state(released_classifier_shapes(6)), random_state(released_reconstructor_shapes(10)), 5, 10
        )


def test_gene_count_mismatch_shows_numbers():
    with pytest.raises(CheckpointError, match=r"10 gene outputs but the gene panel lists 377 genes"):
        check_head_shapes(
            random_state(released_classifier_shapes(6)), random_state(released_reconstructor_shapes(10)), 6, 377
        )


def test_backbone_width_mismatch_shows_numbers():
    with pytest.raises(CheckpointError, match=r"1536-d embeddings but the backbone produces 768-d"):
        check_head_shapes(
            random_state(released_classifier_shapes(6)), random_state(released_reconstructor_shapes(10)), 6, 10, 768
        )


def test_heads_of_different_widths_rejected():
    with pytest.raises(CheckpointError, match="do not belong together"):
        check_head_shapes(
            random_state(released_classifier_shapes(6, width=768)),
            random_state(released_reconstructor_shapes(10)),
            6,
            10,
        )


def test_expected_counts_round_half_to_even():
    mean = torch.tensor([[2.6, 0.5, 1.5, 3.0]])
    zero_probability = torch.tensor([[0.5, 0.0, 0.0, 1.0]])
    # (1 - pi) * mu = 1.3, 0.5, 1.5, 0.0
    assert expected_counts(mean, zero_probability).tolist() == [[1, 0, 2, 0]]


def test_expected_counts_are_int32():
    assert expected_counts(torch.ones(2, 3), torch.zeros(2, 3)).dtype == torch.int32


class _Payload:
    """Unpickling this object would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_objects_are_never_executed(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "malicious.pth"
    with open(path, "wb") as handle:
        pickle.dump({"classifier": _Payload(marker), "reconstructor": {}}, handle)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_released_checkpoint(path, genes=["A"])
    assert not marker.exists()


def test_torch_saved_object_rejected(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "object.pth"
    torch.save({"classifier": _Payload(marker), "reconstructor": {}}, path)
    with pytest.raises(CheckpointError):
        load_released_checkpoint(path, genes=["A"])
    assert not marker.exists()
