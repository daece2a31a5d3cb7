"""``shest run`` end to end on the real CMU slide: outputs, rerun skipping, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SAMPLE = "cmu"


def run_shest(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, MPLBACKEND="Agg", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "shest", *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=1200
    )


def unread_slide(tmp_path: Path) -> Path:
    """Return a slide path whose file exists but is never opened: the checks under test come first."""
    slide = tmp_path / "slide.svs"
    slide.write_bytes(b"not read: the stage options are checked first")
    return slide


def offline_env(tmp_path: Path) -> dict[str, str]:
    """Return environment variables under which no Cellpose model is found or downloaded."""
    return {"SHEST_OFFLINE": "1", "CELLPOSE_LOCAL_MODELS_PATH": str(tmp_path / "models")}


def stage_status(stderr: str) -> dict[str, str]:
    """Parse the summary table that ``shest run`` prints last: stage, ran/skipped, seconds."""
    status = {}
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1] in ("ran", "skipped") and parts[3] == "s":
            status[parts[0]] = parts[1]
    return status


@pytest.fixture(scope="module")
def cmu_run(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    from conftest import data_file

    slide = data_file("wsi/CMU-1-Small-Region.svs")
    outdir = tmp_path_factory.mktemp("run")
    result = run_shest(
        "run", "--wsi", str(slide), "--outdir", str(outdir), "--sample", SAMPLE,
        "--segmenter", "watershed", "--model", "demo", "--niche",
    )
    return slide, outdir, result


def test_run_exits_zero(cmu_run):
    _, _, result = cmu_run
    assert result.returncode == 0, result.stderr[-3000:]


def test_run_ran_every_stage(cmu_run):
    _, _, result = cmu_run
    assert stage_status(result.stderr) == {
        "qc": "ran", "segmentation": "ran", "inference": "ran", "niche": "ran"
    }


def test_run_writes_stage_outputs(cmu_run):
    _, outdir, _ = cmu_run
    expected = [
        "qc/cmu.qc.json", "qc/cmu_qc_mqc.tsv", "qc/cmu.thumbnail.png", "qc/cmu.tissue_mask.png",
        "qc/cmu.tissue.geojson", "qc/cmu.tiles.json",
        "segmentation/cmu.cells.parquet", "segmentation/cmu.nuclei.geojson",
        "segmentation/cmu_segmentation_mqc.tsv",
        "inference/cmu.h5ad", "inference/cmu.cells.geojson", "inference/cmu.overlay.png",
        "inference/cmu_celltypes_mqc.tsv",
        "niche/cmu.niche.h5ad", "niche/cmu_niche_mqc.tsv", "niche/cmu_infiltration_mqc.tsv",
    ]
    missing = [name for name in expected if not (outdir / name).is_file()]
    assert missing == []


def test_run_leaves_no_temporary_files(cmu_run):
    _, outdir, _ = cmu_run
    leftovers = [path.name for path in outdir.rglob("*") if ".tmp" in path.name]
    assert leftovers == []


def test_run_h5ad_has_thousands_of_cells(cmu_run):
    import anndata

    _, outdir, _ = cmu_run
    adata = anndata.read_h5ad(outdir / "inference" / "cmu.h5ad")
    assert adata.n_obs > 1000
    assert adata.obsm["spatial"].shape == (adata.n_obs, 2)
    assert np.issubdtype(adata.X.dtype, np.integer)
    assert list(adata.obs["cell_type"].cat.categories) == [
        "Alveolar_cell", "Tumor_cell_LUAD", "Macrophage", "Endothelial_cell", "Fibroblast", "Lymphocyte"
    ]


def test_run_h5ad_marks_demo(cmu_run):
    import anndata

    _, outdir, _ = cmu_run
    adata = anndata.read_h5ad(outdir / "inference" / "cmu.h5ad", backed="r")
    assert bool(adata.uns["shest"]["demo"]) is True


def test_run_cells_inside_slide(cmu_run):
    import anndata

    _, outdir, _ = cmu_run
    adata = anndata.read_h5ad(outdir / "inference" / "cmu.h5ad")
    xy = adata.obsm["spatial"]
    assert xy[:, 0].min() >= 0 and xy[:, 0].max() < 2220
    assert xy[:, 1].min() >= 0 and xy[:, 1].max() < 2967


def test_run_geojson_matches_h5ad(cmu_run):
    import anndata
    import geopandas

    _, outdir, _ = cmu_run
    cells = geopandas.read_file(outdir / "inference" / "cmu.cells.geojson")
    adata = anndata.read_h5ad(outdir / "inference" / "cmu.h5ad", backed="r")
    assert len(cells) == adata.n_obs
    assert cells.geometry.is_valid.mean() > 0.99


def test_run_segmentation_count_covers_inference(cmu_run):
    import anndata
    import pandas as pd

    _, outdir, _ = cmu_run
    nuclei = pd.read_parquet(outdir / "segmentation" / "cmu.cells.parquet", columns=["cell_id"])
    adata = anndata.read_h5ad(outdir / "inference" / "cmu.h5ad", backed="r")
    # Inference drops nuclei outside the size filter or whose window crosses the image edge.
    assert 0.8 * len(nuclei) <= adata.n_obs <= len(nuclei)


def test_run_niche_labels_every_analysed_cell(cmu_run):
    import anndata

    _, outdir, _ = cmu_run
    niche = anndata.read_h5ad(outdir / "niche" / "cmu.niche.h5ad")
    analysed = niche.obs["niche_analysed"].to_numpy(dtype=bool)
    # Unassigned cells (below the probability cutoff) are left out of niche analysis by default.
    assert analysed.sum() > 1000
    assert niche.obs.loc[analysed, "niche"].notna().all()
    assert not niche.obs.loc[niche.obs["unassigned"].to_numpy(dtype=bool), "niche_analysed"].any()


def test_rerun_skips_completed_stages(cmu_run):
    slide, outdir, first = cmu_run
    assert first.returncode == 0
    h5ad = outdir / "inference" / "cmu.h5ad"
    before = h5ad.stat().st_mtime_ns
    result = run_shest(
        "run", "--wsi", str(slide), "--outdir", str(outdir), "--sample", SAMPLE,
        "--segmenter", "watershed", "--model", "demo", "--niche",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(stage_status(result.stderr).values()) == {"skipped"}
    assert h5ad.stat().st_mtime_ns == before


def test_rerun_with_other_workers_skips_stages(cmu_run):
    slide, outdir, first = cmu_run
    assert first.returncode == 0
    result = run_shest(
        "run", "--wsi", str(slide), "--outdir", str(outdir), "--sample", SAMPLE,
        "--segmenter", "watershed", "--model", "demo", "--niche", "--workers", "1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(stage_status(result.stderr).values()) == {"skipped"}


def test_rerun_redoes_stages_after_changed_option(cmu_run):
    slide, outdir, first = cmu_run
    assert first.returncode == 0
    result = run_shest(
        "run", "--wsi", str(slide), "--outdir", str(outdir), "--sample", SAMPLE,
        "--segmenter", "watershed", "--model", "demo", "--niche", "--probability-cutoff", "0.5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert stage_status(result.stderr) == {
        "qc": "skipped", "segmentation": "skipped", "inference": "ran", "niche": "ran"
    }


def test_rerun_with_force_redoes_qc(cmu_run, tmp_path):
    slide, outdir, first = cmu_run
    assert first.returncode == 0
    record = json.loads((outdir / "qc" / ".qc.done.json").read_text())
    assert record["command"][0] == "qc"
    result = run_shest(
        "run", "--wsi", str(slide), "--outdir", str(outdir), "--sample", SAMPLE,
        "--segmenter", "watershed", "--model", "demo", "--force", "--qc-args", "--chunks 2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert stage_status(result.stderr)["qc"] == "ran"
    # This run left out --niche, so the niche folder still contains the first run's results.
    assert "contains niche results of an earlier inference" in result.stderr


def test_run_without_checkpoint_fails(cmu_slide, tmp_path):
    result = run_shest("run", "--wsi", str(cmu_slide), "--outdir", str(tmp_path / "out"), "--segmenter", "watershed")
    assert result.returncode == 1
    assert "--checkpoint" in result.stderr
    assert not (tmp_path / "out").exists()


def test_run_missing_checkpoint_fails(cmu_slide, tmp_path):
    missing = tmp_path / "absent.safetensors"
    result = run_shest(
        "run", "--wsi", str(cmu_slide), "--outdir", str(tmp_path / "out"), "--checkpoint", str(missing)
    )
    assert result.returncode == 1
    assert str(missing) in result.stderr


def test_run_missing_slide_fails(tmp_path):
    result = run_shest("run", "--wsi", str(tmp_path / "none.svs"), "--outdir", str(tmp_path), "--model", "demo")
    assert result.returncode == 1
    assert "none.svs" in result.stderr


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--segment-args", "--bogus 3", "shest segment does not accept --bogus 3 (from --segment-args)"),
        ("--qc-args", '--roi "x', "--qc-args '--roi \"x' cannot be split"),
        ("--niche-args", "--seed=-1 --graph=web", "argument --graph: invalid choice"),
    ],
)
def test_run_checks_stage_args_before_any_stage(tmp_path, option, value, expected):
    slide = unread_slide(tmp_path)
    out = tmp_path / "out"
    result = run_shest("run", "--wsi", str(slide), "--outdir", str(out), "--model", "demo", "--niche", f"{option}={value}")
    assert result.returncode in (1, 2), result.stderr
    assert expected in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("option", "value", "owned"),
    [
        ("--qc-args", "--sample foo", "--sample"),
        ("--qc-args", "--samp foo", "--sample"),
        ("--qc-args", "--mpp 0.3", "--mpp"),
        ("--qc-args", "--tile-size-um 256", "--tile-size-um"),
        ("--segment-args", "--outdir elsewhere", "--outdir"),
        ("--segment-args", "--backend cellpose", "--backend"),
        ("--segment-args", "--segmenter cellpose", "--backend"),
        ("--infer-args", "--probability-cutoff 0.9", "--probability-cutoff"),
        ("--niche-args", "--slide other.svs", "--slide"),
    ],
)
def test_run_rejects_stage_args_it_owns(tmp_path, option, value, owned):
    slide = unread_slide(tmp_path)
    out = tmp_path / "out"
    result = run_shest("run", "--wsi", str(slide), "--outdir", str(out), "--model", "demo", "--segmenter", "watershed",
                       "--niche", f"{option}={value}")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"{option} sets {owned}, which shest run already decides" in result.stderr
    assert not out.exists()


def test_run_accepts_stage_args_it_leaves_open(cmu_slide, tmp_path):
    # --batch-size of shest segment (Cellpose windows) has no shest run counterpart.
    # The run is stopped at once by a missing Cellpose model, after the check passed.
    result = run_shest("run", "--wsi", str(cmu_slide), "--outdir", str(tmp_path / "out"), "--model", "demo",
                       "--segment-args=--batch-size 4", env=offline_env(tmp_path))  # fmt: skip
    assert "already decides" not in result.stderr
    assert "Cellpose model 'cpsam' is not in" in result.stderr


def test_run_missing_cellpose_model_fails_before_qc(cmu_slide, tmp_path):
    result = run_shest("run", "--wsi", str(cmu_slide), "--outdir", str(tmp_path / "out"), "--model", "demo",
                       env=offline_env(tmp_path))  # fmt: skip
    assert result.returncode == 1
    assert "downloads are off (SHEST_OFFLINE is set)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_run_demo_rejects_checkpoint(tmp_path):
    slide = unread_slide(tmp_path)
    checkpoint = tmp_path / "heads.safetensors"
    checkpoint.write_bytes(b"x")
    result = run_shest("run", "--wsi", str(slide), "--outdir", str(tmp_path / "out"), "--model", "demo",
                       "--checkpoint", str(checkpoint))  # fmt: skip
    assert result.returncode == 1
    assert "--model demo runs a seeded stand-in network" in result.stderr


@pytest.mark.parametrize("cutoff", ["1.5", "-0.1", "nan"])
def test_run_rejects_probability_cutoff_outside_0_1(tmp_path, cutoff):
    slide = unread_slide(tmp_path)
    result = run_shest("run", "--wsi", str(slide), "--outdir", str(tmp_path / "out"), "--model", "demo",
                       f"--probability-cutoff={cutoff}")  # fmt: skip
    assert result.returncode == 2
    assert "--probability-cutoff" in result.stderr


def test_run_without_mpp_names_the_fix(tcga_no_mpp_slide, tmp_path):
    result = run_shest(
        "run", "--wsi", str(tcga_no_mpp_slide), "--outdir", str(tmp_path / "out"),
        "--segmenter", "watershed", "--model", "demo",
    )
    assert result.returncode == 1
    assert "--mpp" in result.stderr
    assert not list((tmp_path / "out").rglob("*.json"))


def test_run_blank_slide_stops_after_qc(tmp_path):
    import tifffile

    slide = tmp_path / "blank.tif"
    image = np.full((1024, 1024, 3), 245, np.uint8)
    tifffile.imwrite(slide, image, tile=(256, 256), photometric="rgb",
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    result = run_shest("run", "--wsi", str(slide), "--outdir", str(tmp_path / "out"),
                       "--segmenter", "watershed", "--model", "demo")
    assert result.returncode == 3  # EmptyResultError: nothing to work on, not a failure
    assert "No tissue detected in blank.tif" in result.stderr
    assert not (tmp_path / "out" / "segmentation").exists()


def test_run_released_checkpoint_needs_panel(cmu_slide, tmp_path):
    released = tmp_path / "weights.pth"
    released.write_bytes(b"PK\x03\x04 not read before the panel check")
    result = run_shest(
        "run", "--wsi", str(cmu_slide), "--outdir", str(tmp_path / "out"), "--checkpoint", str(released)
    )
    assert result.returncode == 1
    assert "--panel" in result.stderr
    assert not (tmp_path / "out").exists()


def test_rerun_redoes_stage_with_truncated_output(cmu_run):
    slide, outdir, first = cmu_run
    assert first.returncode == 0
    h5ad = outdir / "inference" / "cmu.h5ad"
    with open(h5ad, "r+b") as handle:
        handle.truncate(100)
    result = run_shest(
        "run", "--wsi", str(slide), "--outdir", str(outdir), "--sample", SAMPLE,
        "--segmenter", "watershed", "--model", "demo", "--niche",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert stage_status(result.stderr)["inference"] == "ran"
    assert h5ad.stat().st_size > 100


def test_run_refuses_locked_outdir(cmu_slide, tmp_path):
    import fcntl

    outdir = tmp_path / "out"
    outdir.mkdir()
    with open(outdir / ".shest-run.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        result = run_shest("run", "--wsi", str(cmu_slide), "--outdir", str(outdir),
                           "--segmenter", "watershed", "--model", "demo")
    assert result.returncode == 1
    assert "Another shest run is writing to" in result.stderr
    assert not (outdir / "qc").exists()


def test_run_outdir_that_is_a_file_fails(cmu_slide, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    result = run_shest("run", "--wsi", str(cmu_slide), "--outdir", str(blocker),
                       "--segmenter", "watershed", "--model", "demo")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(blocker) in result.stderr
