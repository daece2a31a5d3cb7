"""Nuclear segmentation with Cellpose 4 (Cellpose-SAM) through its Python API.

The model is a built-in name (``cpsam`` by default) looked up in Cellpose's model
folder, or a local model file. Cellpose downloads a missing built-in model from
Hugging Face on first use. This module downloads only when no offline setting is on,
and never for a path. A cluster job or container without network therefore fails at
once, with a message that names the folder for the weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shest.device import resolve_device
from shest.errors import CheckpointError, InputError
from shest.io.atomic import atomic_path
from shest.segmentation.features import filter_label_areas
from shest.segmentation.stain import StainVectors

log = logging.getLogger(__name__)

DEFAULT_MODEL = "cpsam"
# Environment variables that forbid downloads when set to 1, true, yes or on.
OFFLINE_VARIABLES = ("SHEST_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
MODEL_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


@dataclass(frozen=True)
class CellposeParams:
    """Parameters of the Cellpose backend; lengths in µm, areas in µm²."""

    model: str = DEFAULT_MODEL
    """Built-in model name or path of a model file."""
    diameter_um: float | None = None
    """Expected nucleus diameter; ``None`` lets Cellpose-SAM work at the image's own scale."""
    batch_size: int = 8
    """Network input windows (256 x 256 px) per forward pass."""
    flow_threshold: float = 0.4
    """Cellpose flow error threshold (its default)."""
    cellprob_threshold: float = 0.0
    """Cellpose cell probability threshold (its default)."""
    min_area_um2: float = 6.0
    """Smallest nucleus kept."""
    max_area_um2: float = 200.0
    """Largest nucleus kept."""

    def __post_init__(self) -> None:
        if self.diameter_um is not None and self.diameter_um <= 0:
            raise InputError(f"The nucleus diameter must be positive, found {self.diameter_um} µm")
        if self.batch_size < 1:
            raise InputError(f"The Cellpose batch size must be at least 1, found {self.batch_size}")
        if self.max_area_um2 <= self.min_area_um2:
            raise InputError(
                f"max_area_um2 ({self.max_area_um2}) must be larger than min_area_um2 ({self.min_area_um2})"
            )


def offline_setting() -> str | None:
    """Return the first environment variable that forbids downloads, or None."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}:
            return name
    return None


def models_dir() -> Path:
    """Return the folder Cellpose keeps built-in models in (``CELLPOSE_LOCAL_MODELS_PATH`` or ``~/.cellpose/models``).

    Read at call time, so a value set after Cellpose was imported still counts.
    """
    configured = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(configured).expanduser() if configured else Path.home() / ".cellpose" / "models"


def builtin_model_names() -> list[str]:
    """Return the model names Cellpose can download, plus the user models it lists."""
    with _quiet_cellpose_import():
        from cellpose import models
    names = list(models.MODEL_NAMES)
    user_list = models_dir() / "gui_models.txt"
    if user_list.is_file():
        names.extend(line.strip() for line in user_list.read_text().splitlines() if line.strip())
    return names


def resolve_model(spec: str) -> Path:
    """Return the local file of a Cellpose model, downloading a built-in one if allowed.

    Parameters
    ----------
    spec
        A built-in model name (``cpsam``, ``cpsam_v2``, ...) or the path of a model file.

    Raises
    ------
    CheckpointError
        A path that does not exist, or a built-in model that is not in the model folder
        while an offline setting is on (or whose download fails).
    InputError
        A name that is neither a file nor a built-in model.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if _looks_like_path(spec):
        raise CheckpointError(
            f"Cellpose model file not found: {spec}. Check the path given to --cellpose-model; "
            "a path is never downloaded."
        )
    names = builtin_model_names()
    if spec not in names:
        raise InputError(
            f"Unknown Cellpose model {spec!r}: give one of {', '.join(names)} or the path of a model file."
        )
    cached = models_dir() / spec
    if cached.is_file():
        return cached
    blocker = offline_setting()
    if blocker:
        raise CheckpointError(
            f"Cellpose model {spec!r} is not in {models_dir()} and downloads are off ({blocker} is set). "
            f"Copy the weights file there as {cached.name}, set CELLPOSE_LOCAL_MODELS_PATH to the folder "
            "that holds it, or pass --cellpose-model PATH."
        )
    return _download_model(spec, cached)


def _looks_like_path(spec: str) -> bool:
    return (
        os.sep in spec
        or "/" in spec
        or spec.startswith((".", "~"))
        or spec.lower().endswith(MODEL_FILE_SUFFIXES)
    )


def _download_model(name: str, target: Path) -> Path:
    with _quiet_cellpose_import():
        from cellpose import models, utils
    url = models._MODEL_URL + name
    log.info("Downloading Cellpose model %s from %s to %s", name, url, target)
    try:
        with atomic_path(target) as tmp:
            utils.download_url_to_file(url, str(tmp), progress=False)
    except Exception as exc:  # noqa: BLE001 - network errors come in many types
        raise CheckpointError(
            f"Downloading Cellpose model {name!r} from {url} failed ({exc}). Download it elsewhere and copy it "
            f"to {target}, or pass --cellpose-model PATH."
        ) from exc
    return target


def select_device(request: str = "auto"):
    """Return the torch device for Cellpose and log the choice (see :func:`shest.device.resolve_device`).

    ``auto`` takes CUDA, then Apple MPS, then the CPU. An explicit ``cuda`` without
    a CUDA device is an error rather than a silent CPU run.
    """
    return resolve_device(request, purpose="Cellpose", allow_mps=True)


def load_model(path: Path, device) -> Any:
    """Load a Cellpose 4 model file onto ``device`` (bfloat16 weights on CUDA, float32 elsewhere).

    NOTE: the CUDA path and the real Cellpose-SAM weights have not been run in this
    project's tests, which use a CPU and a stand-in network.
    """
    with _quiet_cellpose_import():
        from cellpose import models
    try:
        return models.CellposeModel(
            gpu=device.type != "cpu",
            pretrained_model=str(path),
            device=device,
            use_bfloat16=device.type == "cuda",
        )
    except (RuntimeError, ValueError, KeyError, OSError, EOFError) as exc:
        raise CheckpointError(
            f"Cellpose could not load the model file {path}: {exc}. It must be a Cellpose 4 model "
            "(for example cpsam); Cellpose 3 models do not load in Cellpose 4."
        ) from exc


class CellposeSegmenter:
    """Segment nuclei with a Cellpose 4 model.

    Parameters
    ----------
    params
        Backend parameters.
    device
        ``auto``, ``cpu`` or ``cuda``.
    model
        An already loaded ``cellpose.models.CellposeModel``; when given, ``params.model``
        only labels the outputs. Otherwise the model is resolved and loaded on the
        first call to :meth:`segment`.
    """

    name = "cellpose"

    def __init__(self, params: CellposeParams | None = None, device: str = "auto", model: Any = None) -> None:
        self.params = params or CellposeParams()
        self.device_request = device
        self.model = model
        self.model_file: Path | None = None
        self.stains = StainVectors.ruifrok()
        if model is None:
            # Fail before any tile is read when the weights are missing.
            self.model_file = resolve_model(self.params.model)

    def calibrate(self, windows: Sequence[np.ndarray], mpp: float, stains: StainVectors) -> None:
        """Keep the slide's stain vectors; Cellpose needs no other calibration."""
        self.stains = stains

    def describe(self) -> dict:
        """Return the backend, model and parameters for the output metadata (no device: chunks may differ)."""
        model: dict[str, Any] = {"spec": self.params.model}
        if self.model_file is not None:
            model["file"] = self.model_file.name
            model["size_bytes"] = self.model_file.stat().st_size
        return {"backend": self.name, "parameters": asdict(self.params), "model": model}

    def _ensure_model(self) -> Any:
        if self.model is None:
            assert self.model_file is not None
            device = select_device(self.device_request)
            self.model = load_model(self.model_file, device)
            log.info("Loaded Cellpose model %s", self.model_file)
        return self.model

    def segment(self, rgb: np.ndarray, mpp: float) -> np.ndarray:
        """Return an int32 label image (0 = background) of the nuclei in ``rgb`` at ``mpp`` µm/px."""
        model = self._ensure_model()
        p = self.params
        diameter_px = p.diameter_um / mpp if p.diameter_um else None
        masks, _, _ = model.eval(
            np.ascontiguousarray(rgb),
            batch_size=p.batch_size,
            channel_axis=2,
            diameter=diameter_px,
            flow_threshold=p.flow_threshold,
            cellprob_threshold=p.cellprob_threshold,
            min_size=max(1, int(p.min_area_um2 / mpp**2)),
            normalize=True,
        )
        labels = np.asarray(masks, dtype=np.int32)
        return filter_label_areas(labels, p.min_area_um2 / mpp**2, p.max_area_um2 / mpp**2)


@contextlib.contextmanager
def _quiet_cellpose_import() -> Iterator[None]:
    """Silence Cellpose's import-time warning about the optional DINOv3 models."""
    logger = logging.getLogger("cellpose")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
