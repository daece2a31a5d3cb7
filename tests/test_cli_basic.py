"""The `shest` entry point: version, help without heavy imports, and `shest inspect`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import shest
from shest.cli.main import main

HEAVY_MODULES = ("torch", "cellpose", "squidpy", "scanpy", "anndata", "geopandas", "timm")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shest", *args], capture_output=True, text=True, check=False)


def test_version_flag():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"shest {shest.__version__}"


def test_help_lists_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "inspect" in result.stdout
    assert "qc" in result.stdout


@pytest.mark.parametrize("argv", [["--help"], ["qc", "--help"], ["inspect", "--help"]], ids=["main", "qc", "inspect"])
def test_help_imports_no_heavy_library(argv):
    code = (
        "import sys\n"
        "from shest.cli.main import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('imported:', ','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "imported: "


def test_qc_help_names_contract_options(capsys):
    with pytest.raises(SystemExit):
        main(["qc", "--help"])
    text = capsys.readouterr().out
    for option in ("--mpp", "--roi", "--target-mpp", "--tile-size-um", "--overlap-um", "--chunks", "--min-tissue-area-mm2", "--outdir", "--sample"):
        assert option in text, option


def test_no_subcommand_is_usage_error(capsys):
    assert main([]) == 2


def test_unknown_option_is_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["inspect", "--bogus"])
    assert info.value.code == 2


def test_inspect_text(cmu_slide, capsys):
    assert main(["inspect", str(cmu_slide)]) == 0
    text = capsys.readouterr().out
    assert "0.49900 x 0.49900 µm/px (from vendor)" in text
    assert "aperio" in text
    assert "level 0: 2220 x 2967 px" in text
    assert "label" in text


def test_inspect_json(cmu_slide, capsys):
    assert main(["inspect", str(cmu_slide), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["width"] == 2220
    assert info["height"] == 2967
    assert info["mpp_source"] == "vendor"
    assert info["objective_power"] == 20.0
    assert info["backend"] == "openslide"


def test_inspect_ome_json(ome_tile, capsys):
    assert main(["inspect", str(ome_tile), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "tiffslide"
    assert info["mpp_x"] == pytest.approx(0.50008, abs=1e-5)
    assert info["mpp_source"] == "ome"


def test_inspect_override_json(tcga_no_mpp_slide, capsys):
    assert main(["inspect", str(tcga_no_mpp_slide), "--mpp", "0.25", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mpp_x"] == 0.25
    assert info["mpp_source"] == "override"
    assert info["level_count"] == 2


def test_inspect_without_mpp_describes_slide(tcga_no_mpp_slide, capsys):
    assert main(["inspect", str(tcga_no_mpp_slide)]) == 0
    out = capsys.readouterr().out
    assert "4443 x 3567 px" in out
    assert "every other command needs --mpp" in out


def test_inspect_without_mpp_json_names_fix(tcga_no_mpp_slide, capsys):
    assert main(["inspect", str(tcga_no_mpp_slide), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mpp_x"] is None
    assert "--mpp" in info["mpp_error"]


def test_inspect_absurd_mpp_fails(tcga_no_mpp_slide, capsys):
    assert main(["inspect", str(tcga_no_mpp_slide), "--mpp", "5"]) == 1
    assert "5 µm/px" in capsys.readouterr().err


def test_inspect_missing_file(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "absent.svs")]) == 1
    assert "not found" in capsys.readouterr().err


def test_inspect_error_is_one_line(tmp_path, capsys):
    path = tmp_path / "notes.svs"
    path.write_text("hello\n")
    assert main(["inspect", str(path)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_inspect_subprocess_exit_code(tmp_path):
    path = tmp_path / "notes.svs"
    path.write_text("hello\n")
    result = run_cli("inspect", str(path))
    assert result.returncode == 1
    assert "notes.svs" in result.stderr
