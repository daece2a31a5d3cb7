"""The frozen image backbone: H-optimus-0 from the Hugging Face Hub or a local copy.

H-optimus-0 (Bioptimus) is a ViT-giant/14 with four register tokens (timm
architecture ``vit_giant_patch14_reg4_dinov2``); SHEST reads its 1536-d class-token
embedding. The weights are gated on the Hub: a user accepts Bioptimus' terms at
https://huggingface.co/bioptimus/H-optimus-0 and supplies an access token through
``HF_TOKEN`` (or ``hf auth login``), or points at a local copy. With
``HF_HUB_OFFLINE=1`` only the local Hugging Face cache is searched, so a missing copy
fails at once instead of waiting on the network.

Accepted backbone specifications:

- ``hf-hub:ORG/NAME``: a timm model repository on the Hub (config.json plus weights),
  downloaded into the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``);
- a folder with timm's ``config.json`` and a weights file (a Hub snapshot or the
  output of ``timm.models.save_for_hf``);
- a weights file (``.safetensors``, ``.bin``, ``.pth``): its architecture is read from a
  ``config.json`` beside it, else it is taken to be H-optimus-0 unless
  ``architecture`` names another timm model.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shest.errors import CheckpointError
from shest.model.constants import HOPTIMUS0_ID

log = logging.getLogger(__name__)

HOPTIMUS0_ARCHITECTURE = "vit_giant_patch14_reg4_dinov2"
# timm arguments for a bare weights file: with the architecture's defaults they rebuild
# H-optimus-0, whose Hub config sets nothing else.
BARE_FILE_MODEL_ARGS: dict[str, Any] = {"img_size": 224, "global_pool": "token"}
# Creation arguments the SHEST authors passed to timm for the backbone.
BACKBONE_KWARGS: dict[str, Any] = {"init_values": 1e-5, "dynamic_img_size": True}
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
HUB_PREFIX = "hf-hub:"
TRUE_WORDS = {"1", "true", "yes", "on"}


@dataclass
class Backbone:
    """A frozen backbone in eval mode and where its weights came from."""

    module: nn.Module
    source: str
    architecture: str
    embedding_dim: int
    weights_file: str | None = None

    def describe(self) -> dict[str, Any]:
        """Return JSON-ready provenance (source, architecture, width, weights file name)."""
        return {
            "source": self.source,
            "architecture": self.architecture,
            "embedding_dim": self.embedding_dim,
            "weights_file": Path(self.weights_file).name if self.weights_file else "",
        }


def hub_offline() -> bool:
    """Tell whether ``HF_HUB_OFFLINE`` requests cache-only access to the Hub."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_WORDS


def gated_help(repo_id: str) -> str:
    """Return the instructions for obtaining gated Hub weights."""
    return (
        f"To use {repo_id}: sign in at https://huggingface.co/{repo_id}, accept the model's terms of use, "
        "create a read access token and export HF_TOKEN=<token> (or run 'hf auth login'); the first run downloads "
        "the weights into the Hugging Face cache (HF_HOME). Alternatively pass --backbone with a local folder or "
        "weights file, or use --model demo for a trial run without weights."
    )


def load_backbone(
    spec: str = HOPTIMUS0_ID, architecture: str | None = None, cache_dir: str | os.PathLike | None = None
) -> Backbone:
    """Load a frozen timm backbone in eval mode on the CPU.

    Parameters
    ----------
    spec
        ``hf-hub:ORG/NAME``, a folder with ``config.json`` and weights, or a weights file.
    architecture
        timm architecture for a bare weights file without ``config.json`` beside it;
        defaults to H-optimus-0's.
    cache_dir
        Hugging Face cache folder for ``hf-hub:`` ids (default: ``HF_HUB_CACHE``).

    Raises
    ------
    CheckpointError
        Weights missing (not cached while offline, gated without access, path not
        found) or not matching the architecture.
    """
    start = time.monotonic()
    if spec.startswith(HUB_PREFIX):
        repo_id = spec[len(HUB_PREFIX) :]
        config_file, weights_file = _hub_files(repo_id, cache_dir)
        arch, model_args = _read_timm_config(config_file)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise CheckpointError(
                f"Backbone weights not found: {path}. Give {HOPTIMUS0_ID} (needs access, see docs/model.md), a folder "
                "holding config.json and model.safetensors or pytorch_model.bin, or a weights file."
            )
        config_file, weights_file = _local_files(path)
        if config_file is not None:
            arch, model_args = _read_timm_config(config_file)
        else:
            arch, model_args = architecture or HOPTIMUS0_ARCHITECTURE, dict(BARE_FILE_MODEL_ARGS)
    state = read_state_dict(weights_file)
    module = create_timm_model(arch, model_args, state, source=str(weights_file))
    module.requires_grad_(False).eval()
    width = int(getattr(module, "num_features", 0) or getattr(module, "embed_dim"))
    log.info("Backbone %s (%s, %d-d embedding) loaded in %.1f s", spec, arch, width, time.monotonic() - start)
    return Backbone(module=module, source=spec, architecture=arch, embedding_dim=width, weights_file=str(weights_file))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a tensor state dict from safetensors or a torch file, never unpickling objects."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:
                # Files in torch's legacy (non-zip) format cannot be memory-mapped.
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - safetensors and torch raise many types on bad files
        raise CheckpointError(
            f"Backbone weights {path} could not be read ({type(exc).__name__}: {str(exc)[:200]}). "
            "Only tensors are loaded (safetensors or torch weights_only); re-download the file if it is truncated."
        ) from exc
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"Backbone weights {path} hold no state dict of tensors.")
    return state


def create_timm_model(
    architecture: str, model_args: dict[str, Any], state: dict[str, torch.Tensor], source: str
) -> nn.Module:
    """Create a timm model without random initialisation and load ``state`` strictly.

    The model is first built on the meta device, so a 1.1 B-parameter backbone is not
    initialised only to be overwritten. If that leaves any tensor on the meta device,
    the model is rebuilt on the CPU.
    """
    import timm

    kwargs = {**model_args, **BACKBONE_KWARGS, "num_classes": 0}
    state = {key: value for key, value in state.items() if not key.startswith("head.")}
    try:
        with torch.device("meta"):
            model = timm.create_model(architecture, pretrained=False, **kwargs)
    except RuntimeError as exc:
        raise CheckpointError(f"timm cannot create {architecture!r}: {exc}") from exc
    _load_into(model, state, architecture, source, assign=True)
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        model = timm.create_model(architecture, pretrained=False, **kwargs)
        _load_into(model, state, architecture, source, assign=False)
    return model


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], architecture: str, source: str, assign: bool) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"Backbone weights {source} do not fit timm {architecture!r}: {len(missing)} missing keys "
            f"({', '.join(missing[:5])}), {len(unexpected)} unexpected keys ({', '.join(unexpected[:5])}). "
            "Check the architecture (a config.json beside the weights, or --backbone-arch)."
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"Backbone weights {source}: {key} has shape {tuple(tensor.shape)}, but timm {architecture!r} "
                f"expects {tuple(expected[key].shape)}."
            )
    model.load_state_dict(state, strict=True, assign=assign)


def _hub_files(repo_id: str, cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = hub_offline()
    token = os.environ.get("HF_TOKEN") or None
    try:
        config_file = hf_hub_download(
            repo_id, "config.json", cache_dir=cache_dir, local_files_only=offline, token=token
        )
        for name in WEIGHT_NAMES:
            try:
                weights_file = hf_hub_download(
                    repo_id, name, cache_dir=cache_dir, local_files_only=offline, token=token
                )
                return Path(config_file), Path(weights_file)
            except (EntryNotFoundError, LocalEntryNotFoundError):
                continue
        raise LocalEntryNotFoundError(f"no weights file ({', '.join(WEIGHT_NAMES)}) for {repo_id}")
    except GatedRepoError as exc:
        raise CheckpointError(
            f"{HUB_PREFIX}{repo_id} is gated and this account has no access. {gated_help(repo_id)}"
        ) from exc
    except LocalEntryNotFoundError as exc:
        where = "HF_HUB_OFFLINE is set and" if offline else "the Hub could not be reached and"
        raise CheckpointError(
            f"Backbone weights for {HUB_PREFIX}{repo_id} are not available: {where} they are not in the Hugging "
            f"Face cache. {gated_help(repo_id)}"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise CheckpointError(
            f"{HUB_PREFIX}{repo_id} was not found or needs a token: check the name and HF_TOKEN. {gated_help(repo_id)}"
        ) from exc
    except HfHubHTTPError as exc:
        raise CheckpointError(f"Downloading {HUB_PREFIX}{repo_id} failed: {exc}. {gated_help(repo_id)}") from exc


def _local_files(path: Path) -> tuple[Path | None, Path]:
    if path.is_dir():
        config = path / "config.json"
        weights = next((path / name for name in WEIGHT_NAMES if (path / name).is_file()), None)
        if weights is None:
            weights = next(
                (f for suffix in WEIGHT_SUFFIXES for f in sorted(path.glob(f"*{suffix}")) if f.is_file()), None
            )
        if weights is None:
            raise CheckpointError(
                f"Backbone folder {path} contains no weights file ({', '.join(WEIGHT_NAMES)} or *.safetensors, *.bin, *.pth)."
            )
        return (config if config.is_file() else None), weights
    if path.suffix not in WEIGHT_SUFFIXES:
        raise CheckpointError(f"Backbone weights {path}: expected a {', '.join(WEIGHT_SUFFIXES)} file or a folder.")
    config = path.parent / "config.json"
    return (config if config.is_file() else None), path


def _read_timm_config(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"Backbone config {path} could not be read: {exc}") from exc
    architecture = config.get("architecture")
    if not architecture:
        raise CheckpointError(f"Backbone config {path} names no timm 'architecture'.")
    model_args = dict(config.get("model_args") or {})
    # timm takes the input size, which sizes the position embeddings, from the pretrained
    # config. That config is nested, or is the whole file in the older single-dict layout.
    pretrained_cfg = config.get("pretrained_cfg") or config
    input_size = pretrained_cfg.get("input_size")
    if "img_size" not in model_args and input_size:
        model_args["img_size"] = tuple(int(v) for v in input_size[-2:])
    global_pool = pretrained_cfg.get("global_pool") or config.get("global_pool")
    if "global_pool" not in model_args and global_pool:
        model_args["global_pool"] = global_pool
    return str(architecture), model_args
