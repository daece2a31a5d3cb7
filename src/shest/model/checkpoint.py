"""SHEST head checkpoints: the authors' released layout and the self-describing one.

Released layout (``.pth``, published by the authors on the Hugging Face Hub as
``recognizability/shest``): a torch file holding ``{"classifier": state_dict,
"reconstructor": state_dict}`` and nothing else. It names neither the classes, nor
the genes, nor the backbone, so loading it needs a class list and a gene panel file.

Self-describing layout (``shest-checkpoint/1``): a safetensors file whose tensors are
named ``classifier.<key>`` and ``reconstructor.<key>``. Its header metadata key
``shest`` contains JSON with the class names and colours, the gene names in output
order, the backbone id and embedding width, the input normalisation, the tile
geometry and provenance.

Both are read without unpickling objects: ``torch.load(weights_only=True)`` or
safetensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from shest import __version__
from shest.celltiles.geometry import HOPTIMUS_MEAN, HOPTIMUS_STD, MAX_NUCLEUS_UM, MIN_NUCLEUS_UM, PANE_PX, WINDOW_UM
from shest.errors import CheckpointError, InputError
# LUNG_COLORS is imported so that it stays importable from this module too.
from shest.model.constants import HOPTIMUS0_ID, LUNG_CLASSES, LUNG_COLORS, default_class_colors
from shest.model.heads import check_head_shapes, head_sizes

log = logging.getLogger(__name__)

FORMAT = "shest-checkpoint/1"
METADATA_KEY = "shest"

# Gene-name columns of 10x Genomics panel CSVs: Xenium Prime 5K, multi-tissue v1.
PANEL_COLUMNS = ("gene_name", "Gene")


def default_tile_parameters() -> dict[str, float]:
    return {
        "window_um": WINDOW_UM,
        "pane_px": PANE_PX,
        "tile_px": 2 * PANE_PX,
        "min_nucleus_um": MIN_NUCLEUS_UM,
        "max_nucleus_um": MAX_NUCLEUS_UM,
    }


def default_normalization() -> dict[str, list[float]]:
    return {"mean": list(HOPTIMUS_MEAN), "std": list(HOPTIMUS_STD)}


@dataclass
class HeadCheckpoint:
    """Weights of both SHEST heads with what is needed to label their outputs."""

    classifier: dict[str, torch.Tensor]
    reconstructor: dict[str, torch.Tensor]
    classes: list[str]
    colors: list[str]
    genes: list[str]
    backbone: str = HOPTIMUS0_ID
    normalization: dict[str, list[float]] = field(default_factory=default_normalization)
    tile: dict[str, float] = field(default_factory=default_tile_parameters)
    provenance: dict[str, Any] = field(default_factory=dict)
    layout: str = FORMAT
    path: Path | None = None
    sha256: str | None = None

    @property
    def embedding_dim(self) -> int:
        return head_sizes(self.classifier, self.reconstructor)["embedding_dim"]

    def metadata(self) -> dict[str, Any]:
        """Return the JSON metadata stored in a self-describing checkpoint."""
        return {
            "format": FORMAT,
            "classes": list(self.classes),
            "colors": list(self.colors),
            "genes": list(self.genes),
            "backbone": self.backbone,
            "embedding_dim": self.embedding_dim,
            "normalization": self.normalization,
            "tile": self.tile,
            "provenance": self.provenance,
        }


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def class_colors(classes: list[str], colors: list[str] | None = None) -> list[str]:
    """Return one hex colour per class: given ones, the lung palette for the lung classes, else tab10."""
    if colors is not None:
        if len(colors) != len(classes):
            raise InputError(f"Got {len(colors)} colours for {len(classes)} classes; give one colour per class.")
        return [_check_hex(color) for color in colors]
    return default_class_colors(classes)


def read_panel(path: str | os.PathLike, column: str | None = None) -> list[str]:
    """Read gene names, in file order, from a 10x Genomics Xenium panel CSV.

    Parameters
    ----------
    path
        Panel CSV: the ``gene_name`` column of the Xenium Prime 5K metadata file or the
        ``Gene`` column of the multi-tissue v1 file is used unless ``column`` is given.
    column
        Name of the gene column, for other CSV layouts.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"Gene panel file not found: {path}. Give the 10x Xenium panel CSV the checkpoint was trained with."
        )
    try:
        table = pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise InputError(f"Gene panel {path} could not be read as CSV: {exc}") from exc
    candidates = [column] if column else list(PANEL_COLUMNS)
    found = next((name for name in candidates if name in table.columns), None)
    if found is None:
        raise InputError(
            f"Gene panel {path} has no {' or '.join(repr(c) for c in candidates)} column "
            f"(columns: {', '.join(map(str, table.columns[:10]))}); name the gene column with --panel-column."
        )
    genes = table[found].dropna().astype(str).str.strip().tolist()
    if not genes:
        raise InputError(f"Gene panel {path} lists no genes in column {found!r}.")
    duplicates = sorted(gene for gene, count in Counter(genes).items() if count > 1)
    if duplicates:
        raise InputError(f"Gene panel {path} repeats gene names: {', '.join(duplicates[:10])}.")
    return genes


def is_safetensors(path: str | os.PathLike) -> bool:
    """Tell whether a file starts with a safetensors header (length, then a JSON object)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 0 < length < (1 << 30) and head[8:9] == b"{"


def looks_like_torch_file(path: str | os.PathLike) -> bool:
    """Tell whether a file starts like a ``torch.save`` file: a zip archive or a legacy pickle."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def check_checkpoint_format(path: str | os.PathLike) -> str:
    """Return ``"safetensors"`` or ``"released"`` for a checkpoint file, by its first bytes.

    Raises
    ------
    CheckpointError
        The file is neither, such as an HTML error page or a partial download.
    """
    if is_safetensors(path):
        return "safetensors"
    if looks_like_torch_file(path):
        return "released"
    with open(path, "rb") as handle:
        head = handle.read(16)
    raise CheckpointError(
        f"{path} is neither a safetensors file written by 'shest convert-checkpoint' nor a torch file (.pth) as the "
        f"authors released it: it starts with {head!r}. The download may be incomplete or an error page; download "
        "the weights again and compare their checksum."
    )


def load_checkpoint(
    path: str | os.PathLike,
    panel: str | os.PathLike | None = None,
    classes: list[str] | None = None,
    colors: list[str] | None = None,
    panel_column: str | None = None,
    backbone: str | None = None,
) -> HeadCheckpoint:
    """Load either checkpoint layout, telling them apart by content.

    ``panel``, ``classes`` and ``colors`` label a released checkpoint; for a
    self-describing one they must be absent or agree with what it stores.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint not found: {path}. Give the SHEST head weights (.pth from the authors, or a file "
            "written by 'shest convert-checkpoint'), or use --model demo for a trial run."
        )
    if check_checkpoint_format(path) == "safetensors":
        checkpoint = load_shest_checkpoint(path)
        if panel is not None:
            panel_genes = read_panel(panel, panel_column)
            if panel_genes != checkpoint.genes:
                raise CheckpointError(
                    f"{path} stores {len(checkpoint.genes)} gene names that differ from the {len(panel_genes)} in "
                    f"{panel}; a self-describing checkpoint needs no --panel."
                )
        if classes is not None and list(classes) != checkpoint.classes:
            raise CheckpointError(
                f"{path} stores the classes {checkpoint.classes}, not {list(classes)}; leave out --classes."
            )
        return checkpoint
    if panel is None:
        raise CheckpointError(
            f"{path} is in the released layout, which names no genes: give the gene panel CSV with --panel "
            "(10x Xenium Prime 5K or multi-tissue v1, as the model was trained), or convert it once with "
            "'shest convert-checkpoint'."
        )
    return load_released_checkpoint(path, read_panel(panel, panel_column), classes, colors, backbone=backbone)


def load_released_checkpoint(
    path: str | os.PathLike,
    genes: list[str],
    classes: list[str] | None = None,
    colors: list[str] | None = None,
    backbone: str | None = None,
) -> HeadCheckpoint:
    """Load the authors' ``{"classifier": ..., "reconstructor": ...}`` file and label its outputs.

    Raises
    ------
    CheckpointError
        The file is not a torch file of that layout, contains objects other than tensors,
        or its shapes do not match the classes or genes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}. Give the released SHEST head weights (.pth).")
    if check_checkpoint_format(path) == "safetensors":
        raise CheckpointError(
            f"{path} is already a self-describing checkpoint (safetensors, with its classes and genes); "
            "use it directly with --checkpoint, without --panel and without converting it."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises pickle, zip and runtime errors here
        raise CheckpointError(
            f"{path} could not be read as a torch checkpoint with weights_only=True ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Files holding arbitrary Python objects are rejected."
        ) from exc
    if not isinstance(state, dict) or not {"classifier", "reconstructor"} <= set(state):
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a SHEST checkpoint: expected a dict with 'classifier' and 'reconstructor' state dicts, "
            f"found {keys}."
        )
    classifier = _tensor_dict(state["classifier"], path, "classifier")
    reconstructor = _tensor_dict(state["reconstructor"], path, "reconstructor")
    classes = list(classes) if classes else list(LUNG_CLASSES)
    repeated = sorted(name for name, count in Counter(classes).items() if count > 1)
    if repeated:
        raise CheckpointError(
            f"The class names repeat {', '.join(repeated)}; give each class once with --classes, in the order of "
            "the classifier's outputs."
        )
    check_head_shapes(classifier, reconstructor, len(classes), len(genes), source=str(path))
    digest = sha256_file(path)
    # NOTE: the authors' inference labels outputs in panel-file order, but their training
    # targets followed the Xenium table's gene order. A released file records neither.
    return HeadCheckpoint(
        classifier=classifier,
        reconstructor=reconstructor,
        classes=classes,
        colors=class_colors(classes, colors),
        genes=list(genes),
        backbone=backbone or HOPTIMUS0_ID,
        provenance={"source_file": path.name, "source_sha256": digest, "source_layout": "released"},
        layout="released",
        path=path,
        sha256=digest,
    )


def load_shest_checkpoint(path: str | os.PathLike) -> HeadCheckpoint:
    """Load a self-describing safetensors checkpoint and check it against its own metadata."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            raw = (handle.metadata() or {}).get(METADATA_KEY)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} could not be read as safetensors: {exc}") from exc
    if raw is None:
        raise CheckpointError(
            f"{path} is a safetensors file without SHEST metadata; convert the released .pth with 'shest convert-checkpoint'."
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: the SHEST metadata is not valid JSON ({exc}).") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format')!r}; this version reads {FORMAT}.")
    for key in ("classes", "colors", "genes", "backbone"):
        if key not in meta:
            raise CheckpointError(f"{path}: the SHEST metadata lacks {key!r}.")
    classifier = {key.split(".", 1)[1]: value for key, value in tensors.items() if key.startswith("classifier.")}
    reconstructor = {key.split(".", 1)[1]: value for key, value in tensors.items() if key.startswith("reconstructor.")}
    check_head_shapes(
        classifier, reconstructor, len(meta["classes"]), len(meta["genes"]), meta.get("embedding_dim"), str(path)
    )
    return HeadCheckpoint(
        classifier=classifier,
        reconstructor=reconstructor,
        classes=list(meta["classes"]),
        colors=class_colors(list(meta["classes"]), list(meta["colors"])),
        genes=list(meta["genes"]),
        backbone=str(meta["backbone"]),
        normalization=meta.get("normalization") or default_normalization(),
        tile=meta.get("tile") or default_tile_parameters(),
        provenance=dict(meta.get("provenance") or {}),
        layout=FORMAT,
        path=path,
        sha256=sha256_file(path),
    )


def save_shest_checkpoint(checkpoint: HeadCheckpoint, path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` as a self-describing safetensors file (atomically) and return its path."""
    from safetensors.torch import save_file

    from shest.io.atomic import atomic_path

    provenance = dict(checkpoint.provenance)
    provenance.setdefault("created_by", f"shest {__version__}")
    provenance.setdefault("created_at", datetime.now(timezone.utc).replace(microsecond=0).isoformat())
    checkpoint.provenance = provenance
    tensors = {f"classifier.{key}": value.contiguous() for key, value in checkpoint.classifier.items()}
    tensors.update({f"reconstructor.{key}": value.contiguous() for key, value in checkpoint.reconstructor.items()})
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(checkpoint.metadata(), sort_keys=True)})
    return path


def _tensor_dict(value: Any, path: Path, name: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, dict) or not all(isinstance(v, torch.Tensor) for v in value.values()):
        raise CheckpointError(f"{path}: {name!r} is not a state dict of tensors.")
    return {str(key): tensor for key, tensor in value.items()}


def _check_hex(color: str) -> str:
    text = str(color).strip()
    if len(text) != 7 or not text.startswith("#") or any(c not in "0123456789abcdefABCDEF" for c in text[1:]):
        raise InputError(f"Invalid colour {color!r}: use '#rrggbb' hex.")
    return text.lower()
