"""Checkpoints: released layout plus panel, the self-describing file, convert-checkpoint, failures."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors import safe_open

from shest.cli.main import main
from shest.errors import CheckpointError, InputError
from shest.model.checkpoint import (
    FORMAT,
    LUNG_CLASSES,
    LUNG_COLORS,
    is_safetensors,
    load_checkpoint,
    load_released_checkpoint,
    load_shest_checkpoint,
    read_panel,
    save_shest_checkpoint,
)
from shest.model.heads import Classifier, Reconstructor

WIDTH = 32
GENES = ["EPCAM", "SFTPC", "CD68", "PECAM1", "COL1A1", "PTPRC", "MS4A1"]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A checkpoint in the authors' released layout: 6 classes, 7 genes, 32-d embedding."""
    torch.manual_seed(0)
    state = {
        "classifier": Classifier(6, WIDTH).state_dict(),
        "reconstructor": Reconstructor(len(GENES), WIDTH).state_dict(),
    }
    path = tmp_path_factory.mktemp("released") / "weights_lung.pth"
    torch.save(state, path)
    return path


@pytest.fixture
def prime_panel(tmp_path):
    """Panel CSV laid out like the Xenium Prime 5K metadata file (gene_name column)."""
    path = tmp_path / "XeniumPrimeHuman5Kpan_tissue_pathways_metadata.csv"
    pd.DataFrame({"gene_id": [f"ENSG{i:011d}" for i in range(len(GENES))], "gene_name": GENES}).to_csv(
        path, index=False
    )
    return path


@pytest.fixture
def v1_panel(tmp_path):
    """Panel CSV laid out like the Xenium multi-tissue v1 file (Gene column)."""
    path = tmp_path / "Xenium_hMulti_v1_metadata_annotations.csv"
    pd.DataFrame({"Gene": GENES, "Annotation": ["x"] * len(GENES)}).to_csv(path, index=False)
    return path


def test_panel_gene_name_column(prime_panel):
    assert read_panel(prime_panel) == GENES


def test_panel_gene_column(v1_panel):
    assert read_panel(v1_panel) == GENES


def test_panel_without_gene_column_lists_columns(tmp_path):
    path = tmp_path / "panel.csv"
    pd.DataFrame({"symbol": GENES}).to_csv(path, index=False)
    with pytest.raises(InputError, match="symbol"):
        read_panel(path)


def test_panel_duplicates_rejected(tmp_path):
    path = tmp_path / "panel.csv"
    pd.DataFrame({"Gene": ["A", "B", "A"]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="repeats gene names: A"):
        read_panel(path)


def test_released_layout_labelled_by_panel(released, prime_panel):
    checkpoint = load_checkpoint(released, panel=prime_panel)
    assert checkpoint.classes == list(LUNG_CLASSES)
    assert checkpoint.colors == list(LUNG_COLORS)
    assert checkpoint.genes == GENES
    assert checkpoint.embedding_dim == WIDTH
    assert checkpoint.layout == "released"


def test_released_layout_needs_panel(released):
    with pytest.raises(CheckpointError, match="--panel"):
        load_checkpoint(released)


def test_released_wrong_panel_length(released, tmp_path):
    path = tmp_path / "short.csv"
    pd.DataFrame({"gene_name": GENES[:5]}).to_csv(path, index=False)
    with pytest.raises(CheckpointError, match=r"7 gene outputs but the gene panel lists 5 genes"):
        load_checkpoint(released, panel=path)


def test_released_wrong_class_count(released):
    with pytest.raises(CheckpointError, match=r"6 outputs but 2 class names"):
        load_released_checkpoint(released, GENES, classes=["Tumor", "Other"])


def test_missing_checkpoint_names_the_way_out(tmp_path):
    with pytest.raises(CheckpointError, match="--model demo"):
        load_checkpoint(tmp_path / "absent.pth")


def test_not_a_shest_dict_rejected(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="'classifier' and 'reconstructor'"):
        load_released_checkpoint(path, GENES)


def test_self_describing_round_trip(released, prime_panel, tmp_path):
    original = load_checkpoint(released, panel=prime_panel)
    path = save_shest_checkpoint(original, tmp_path / "lung.safetensors")
    loaded = load_shest_checkpoint(path)
    assert loaded.classes == original.classes
    assert loaded.colors == original.colors
    assert loaded.genes == GENES
    assert loaded.backbone == "hf-hub:bioptimus/H-optimus-0"
    assert all(torch.equal(loaded.classifier[k], original.classifier[k]) for k in original.classifier)
    assert all(torch.equal(loaded.reconstructor[k], original.reconstructor[k]) for k in original.reconstructor)


def test_self_describing_metadata_fields(released, prime_panel, tmp_path):
    path = save_shest_checkpoint(load_checkpoint(released, panel=prime_panel), tmp_path / "lung.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["shest"])
        keys = set(handle.keys())
    assert meta["format"] == FORMAT
    assert meta["embedding_dim"] == WIDTH
    assert meta["normalization"]["mean"] == [0.707223, 0.578729, 0.703617]
    assert meta["tile"]["window_um"] == 16.0
    assert meta["provenance"]["source_file"] == released.name
    assert len(meta["provenance"]["source_sha256"]) == 64
    assert "classifier.fc3.weight" in keys
    assert "reconstructor.fc_probability.bias" in keys


def test_self_describing_needs_no_panel(released, prime_panel, tmp_path):
    path = save_shest_checkpoint(load_checkpoint(released, panel=prime_panel), tmp_path / "lung.safetensors")
    assert is_safetensors(path)
    assert load_checkpoint(path).genes == GENES


def test_self_describing_rejects_other_panel(released, prime_panel, tmp_path):
    path = save_shest_checkpoint(load_checkpoint(released, panel=prime_panel), tmp_path / "lung.safetensors")
    other = tmp_path / "other.csv"
    pd.DataFrame({"gene_name": list(reversed(GENES))}).to_csv(other, index=False)
    with pytest.raises(CheckpointError, match="differ"):
        load_checkpoint(path, panel=other)


def test_self_describing_metadata_checked_against_tensors(released, prime_panel, tmp_path):
    checkpoint = load_checkpoint(released, panel=prime_panel)
    checkpoint.genes = GENES + ["EXTRA"]
    path = save_shest_checkpoint(checkpoint, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match=r"7 gene outputs but the gene panel lists 8 genes"):
        load_shest_checkpoint(path)


def test_convert_checkpoint_cli(released, v1_panel, tmp_path):
    output = tmp_path / "lung.safetensors"
    code = main(["convert-checkpoint", str(released), "--panel", str(v1_panel), "--output", str(output)])
    assert code == 0
    loaded = load_checkpoint(output)
    assert loaded.genes == GENES
    assert loaded.provenance["panel_file"] == v1_panel.name


def test_convert_checkpoint_cli_custom_classes(released, v1_panel, tmp_path):
    output = tmp_path / "custom.safetensors"
    names = ["A", "B", "C", "D", "E", "F"]
    code = main(
        ["convert-checkpoint", str(released), "--panel", str(v1_panel), "--output", str(output), "--classes", *names]
    )
    assert code == 0
    assert load_checkpoint(output).classes == names


def test_convert_checkpoint_cli_wrong_panel_length(released, tmp_path, capsys):
    panel = tmp_path / "long.csv"
    pd.DataFrame({"Gene": GENES + ["X1", "X2"]}).to_csv(panel, index=False)
    output = tmp_path / "out.safetensors"
    code = main(["convert-checkpoint", str(released), "--panel", str(panel), "--output", str(output)])
    assert code == 1
    assert "7 gene outputs but the gene panel lists 9 genes" in capsys.readouterr().err
    assert not output.exists()


def test_convert_checkpoint_cli_keeps_existing_output(released, v1_panel, tmp_path):
    output = tmp_path / "out.safetensors"
    output.write_text("keep")
    code = main(["convert-checkpoint", str(released), "--panel", str(v1_panel), "--output", str(output)])
    assert code == 1
    assert output.read_text() == "keep"


def test_convert_checkpoint_cli_missing_input(v1_panel, tmp_path, capsys):
    code = main(
        ["convert-checkpoint", str(tmp_path / "absent.pth"), "--panel", str(v1_panel), "--output", str(tmp_path / "o")]
    )
    assert code == 1
    assert "absent.pth" in capsys.readouterr().err


def test_convert_checkpoint_cli_rejects_repeated_classes(released, v1_panel, tmp_path, capsys):
    output = tmp_path / "out.safetensors"
    names = ["A", "B", "A", "D", "E", "F"]
    code = main(
        ["convert-checkpoint", str(released), "--panel", str(v1_panel), "--output", str(output), "--classes", *names]
    )
    assert code == 1
    assert "The class names repeat A" in capsys.readouterr().err
    assert not output.exists()


def test_convert_checkpoint_cli_rejects_converted_file(released, v1_panel, tmp_path, capsys):
    converted = tmp_path / "lung.safetensors"
    assert main(["convert-checkpoint", str(released), "--panel", str(v1_panel), "--output", str(converted)]) == 0
    capsys.readouterr()
    code = main(["convert-checkpoint", str(converted), "--panel", str(v1_panel), "--output", str(tmp_path / "o")])
    assert code == 1
    assert "already a self-describing checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("content", [b"<!DOCTYPE html><html>403 Forbidden</html>", bytes(range(7, 200))])
def test_file_that_is_no_checkpoint_is_named(tmp_path, suffix, content):
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="neither a safetensors file .* nor a torch file"):
        load_checkpoint(path, panel=None)
