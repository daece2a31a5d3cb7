"""Cellpose backend offline: model resolution, device choice and the segmentation path.

The real Cellpose-SAM weights are not used. A small network with fixed kernels replaces
CPSAM. Its "flows" are the gradient of the blurred darkness, which points to the centre
of dark blobs, and its cell probability is the blurred darkness. It is saved
as a model file that Cellpose loads through its own ``CellposeModel`` constructor,
so normalisation, tiling, flow dynamics and mask building all run for real.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
cellpose_models = pytest.importorskip("cellpose.models")

from shest.cli.main import main  # noqa: E402
from shest.errors import CheckpointError, InputError  # noqa: E402
from shest.segmentation import cellpose_backend  # noqa: E402
from shest.segmentation.cellpose_backend import (  # noqa: E402
    CellposeParams,
    CellposeSegmenter,
    load_model,
    resolve_model,
    select_device,
)
from shest.segmentation.stand_in import stand_in_network_class  # noqa: E402
from shest.segmentation.synthetic import Nucleus, render_he  # noqa: E402
from shest.segmentation.table import read_cell_table  # noqa: E402
from shest.slide import open_slide  # noqa: E402
from shest.tiling import make_tile_plan  # noqa: E402

# Cellpose's mask building triggers a PyTorch notice about sparse tensor checks.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")


DarkBlobFlowNet = stand_in_network_class()


@pytest.fixture
def stand_in_model_file(tmp_path, monkeypatch):
    """A model file of the stand-in network, and Cellpose set to build that network for it."""
    path = tmp_path / "dark_blobs.pth"
    torch.save(DarkBlobFlowNet().state_dict(), path)
    monkeypatch.setattr(cellpose_models, "CPSAM", DarkBlobFlowNet)
    return path


@pytest.fixture
def no_downloads(monkeypatch):
    """Fail the test if anything tries to download a model."""
    import cellpose.utils

    def reject_download(*args, **kwargs):
        raise AssertionError("a model download was attempted")

    monkeypatch.setattr(cellpose.utils, "download_url_to_file", reject_download)


@pytest.fixture
def disc_image():
    centres = [(50, 50), (50, 120), (150, 80), (200, 220), (250, 60), (120, 200)]
    nuclei = [Nucleus(x, y, 8, 8) for y, x in centres]
    rgb, truth = render_he((300, 300), nuclei, seed=2)
    return rgb, truth, centres


def test_missing_model_path_is_an_error(tmp_path, no_downloads):
    with pytest.raises(CheckpointError, match="not found"):
        resolve_model(str(tmp_path / "absent.pth"))


def test_unknown_model_name_is_an_error(no_downloads):
    with pytest.raises(InputError, match="Unknown Cellpose model"):
        resolve_model("no_such_model")


def test_builtin_model_offline_fails_fast(tmp_path, monkeypatch, no_downloads):
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="CELLPOSE_LOCAL_MODELS_PATH"):
        resolve_model("cpsam")


def test_builtin_model_found_in_local_models_path(tmp_path, monkeypatch, no_downloads):
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path))
    monkeypatch.setenv("SHEST_OFFLINE", "1")
    (tmp_path / "cpsam").write_bytes(b"weights")
    assert resolve_model("cpsam") == tmp_path / "cpsam"


def test_builtin_model_downloaded_into_models_path(tmp_path, monkeypatch):
    import cellpose.utils

    requested = []

    def fake_download(url, destination, progress=True):
        requested.append(url)
        with open(destination, "wb") as handle:
            handle.write(b"weights")

    for name in cellpose_backend.OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path))
    monkeypatch.setattr(cellpose.utils, "download_url_to_file", fake_download)
    assert resolve_model("cpsam").read_bytes() == b"weights"
    assert requested[0].endswith("/cpsam")


def test_cpu_device_on_request():
    assert select_device("cpu").type == "cpu"


def test_cuda_request_without_gpu_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(InputError, match="no CUDA device"):
        select_device("cuda")


def test_auto_device_logs_cpu_fallback(caplog):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with caplog.at_level(logging.INFO, logger="shest.device"):
        device = select_device("auto")
    if device.type == "cpu":
        assert "No GPU found" in caplog.text


def test_invalid_model_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="could not load"):
        load_model(path, select_device("cpu"))


def test_stand_in_network_segments_discs(stand_in_model_file, disc_image, no_downloads):
    rgb, _, centres = disc_image
    segmenter = CellposeSegmenter(CellposeParams(model=str(stand_in_model_file)), device="cpu")
    labels = segmenter.segment(rgb, 0.5)
    found = [int(labels[c]) for c in centres]
    assert all(found)
    assert len(set(found)) == len(centres)


def test_diameter_converted_to_pixels(stand_in_model_file, disc_image, monkeypatch):
    rgb, _, _ = disc_image
    segmenter = CellposeSegmenter(CellposeParams(model=str(stand_in_model_file), diameter_um=8.0), device="cpu")
    model = segmenter._ensure_model()
    seen = {}
    original = model.eval

    def recording_eval(image, **kwargs):
        seen.update(kwargs)
        return original(image, **kwargs)

    monkeypatch.setattr(model, "eval", recording_eval)
    segmenter.segment(rgb, 0.25)
    assert seen["diameter"] == pytest.approx(32.0)
    assert seen["batch_size"] == 8


def test_segment_cli_with_stand_in_model(stand_in_model_file, tmp_path, no_downloads):
    nuclei = [Nucleus(x, y, 8, 7) for y in range(30, 260, 40) for x in range(30, 260, 40)]
    rgb, _ = render_he((280, 280), nuclei, seed=5)
    slide_path = tmp_path / "discs.png"
    Image.fromarray(rgb).save(slide_path)
    with open_slide(slide_path, mpp=0.5) as slide:
        plan = make_tile_plan(np.ones((2, 2), bool), 140.0, slide.dimensions, slide.mpp, "discs", tile_size_um=80.0)
    plan.save(tmp_path / "discs.tiles.json")
    code = main([
        "segment", str(slide_path), "--plan", str(tmp_path / "discs.tiles.json"), "--mpp", "0.5",
        "--backend", "cellpose", "--cellpose-model", str(stand_in_model_file), "--device", "cpu",
        "--outdir", str(tmp_path / "out"),
    ])
    assert code == 0
    table, metadata = read_cell_table(tmp_path / "out" / "discs.cells.parquet")
    assert len(table) >= 0.9 * len(nuclei)
    assert metadata["segmentation"]["backend"] == "cellpose"
    assert metadata["segmentation"]["model"]["file"] == "dark_blobs.pth"
