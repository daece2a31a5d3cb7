"""Backbone loading: offline and gated failures, local folders and weights files, frozen eval mode."""

from __future__ import annotations

import socket
import types

import pytest
import timm
import torch

from shest.errors import CheckpointError
from shest.model import backbone as backbone_module
from shest.model.backbone import load_backbone


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything opens a network connection."""

    def reject_connection(*args, **kwargs):
        raise AssertionError("the backbone loader tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", reject_connection)
    monkeypatch.setattr(socket, "create_connection", reject_connection)


@pytest.fixture(scope="module")
def small_vit():
    """A small timm ViT with four register tokens, like H-optimus-0 but 2 blocks of 384-d."""
    torch.manual_seed(0)
    return timm.create_model(
        "vit_small_patch14_reg4_dinov2", pretrained=False, img_size=224, depth=2, num_classes=0
    ).eval()


def test_offline_without_cache_fails_clearly(monkeypatch, tmp_path, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as error:
        load_backbone("hf-hub:bioptimus/H-optimus-0", cache_dir=tmp_path)
    message = str(error.value)
    assert "HF_HUB_OFFLINE" in message
    assert "HF_TOKEN" in message
    assert "terms of use" in message
    assert "--model demo" in message


def test_gated_repository_explains_access(monkeypatch, tmp_path):
    from huggingface_hub.errors import GatedRepoError

    response = types.SimpleNamespace(headers={}, status_code=403, request=None, url="https://huggingface.co")

    def gated(*args, **kwargs):
        raise GatedRepoError("403 gated", response=response)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", gated)
    with pytest.raises(CheckpointError, match="accept the model's terms of use"):
        load_backbone("hf-hub:bioptimus/H-optimus-0", cache_dir=tmp_path)


def test_missing_local_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_backbone(str(tmp_path / "absent.safetensors"))


def test_local_folder_with_timm_config(small_vit, tmp_path, no_network):
    timm.models.save_for_hf(small_vit, str(tmp_path / "vit"), safe_serialization=True)
    loaded = load_backbone(str(tmp_path / "vit"))
    tiles = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(loaded.module(tiles), small_vit(tiles), atol=1e-5)
    assert loaded.embedding_dim == 384
    assert loaded.architecture == "vit_small_patch14_reg4_dinov2"


def test_local_weights_file_with_architecture(tmp_path, no_network):
    torch.manual_seed(1)
    reference = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=224, num_classes=0).eval()
    path = tmp_path / "pytorch_model.bin"
    torch.save(reference.state_dict(), path)
    loaded = load_backbone(str(path), architecture="vit_small_patch14_reg4_dinov2")
    tiles = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(loaded.module(tiles), reference(tiles), atol=1e-5)


def test_loaded_backbone_is_frozen_in_eval(small_vit, tmp_path):
    path = tmp_path / "vit"
    timm.models.save_for_hf(small_vit, str(path), safe_serialization=True)
    module = load_backbone(str(path)).module
    assert not module.training
    assert not any(parameter.requires_grad for parameter in module.parameters())


def test_weights_do_not_fit_architecture(small_vit, tmp_path):
    path = tmp_path / "model.safetensors"
    from safetensors.torch import save_file

    save_file(small_vit.state_dict(), str(path))
    # Without config.json a bare file is taken for H-optimus-0 (ViT-giant), which it is not.
    with pytest.raises(CheckpointError, match="do not fit timm 'vit_giant_patch14_reg4_dinov2'"):
        load_backbone(str(path))


def test_pickled_backbone_objects_rejected(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"model": types.SimpleNamespace(weights=1)}, path)
    with pytest.raises(CheckpointError, match="Only tensors are loaded"):
        load_backbone(str(path), architecture="vit_small_patch14_reg4_dinov2")


def test_hub_offline_flag_values(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    assert backbone_module.hub_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not backbone_module.hub_offline()
