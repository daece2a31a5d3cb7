"""Offline checks of the Nextflow layer, without Nextflow.

tests/nextflow/tools/ci_nfcheck.sh runs: a Groovy 4 parse of every .nf, .config and
.nf.test file with structure checks (process sections, include targets, `.out.X`
emits), `nf-core pipelines lint` (offline subset), `nf-core pipelines schema lint`, and
JSON-schema checks of the parameters and samplesheets. The first run installs the tools
(Groovy 4 jars from npm, nf-core==4.2.1 and jsonschema from PyPI) into git-ignored
folders beside the scripts.

Broken copies of the pipeline in a temporary folder show that each check fails when it
should. NOTE: passing these checks is not a Nextflow run: nf-test and Nextflow runs were
not executed here, since no Nextflow runtime can be installed on this machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import DATA_DIR, PROJECT_ROOT

pytestmark = pytest.mark.nextflow

TOOLS = PROJECT_ROOT / "tests" / "nextflow" / "tools"
# What a copy of the pipeline needs for the parse and schema checks.
PIPELINE_PATHS = [
    "main.nf", "nextflow.config", "nextflow_schema.json", "nf-test.config",
    "assets", "conf", "modules", "subworkflows", "workflows", "tests/default.nf.test", "tests/nextflow.config",
]


def _require_tools() -> None:
    for program in ("java", "npm"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed; the offline Nextflow checks need Java 17 and npm")
    subprocess.run([str(TOOLS / "install.sh")], check=True, capture_output=True, text=True)


def _env() -> dict[str, str]:
    return {**os.environ, "NXF_OFFLINE": "true", "NFCORE_NO_VERSION_CHECK": "1"}


def nextflow_files(root: Path) -> list[str]:
    skip = {".git", ".venv", "work", ".nf-test", "tools"}
    return sorted(
        str(path) for path in root.rglob("*")
        if path.is_file() and not skip.intersection(path.relative_to(root).parts)
        and (path.suffix in (".nf", ".config") or path.name.endswith(".nf.test"))
    )


def run_parse(root: Path) -> subprocess.CompletedProcess:
    command = ["java", "-XX:TieredStopAtLevel=1", "-cp", str(TOOLS / "groovy4" / "*"), "groovy.ui.GroovyMain",
               str(TOOLS / "nfparse.groovy"), *nextflow_files(root)]
    return subprocess.run(command, capture_output=True, text=True, cwd=root)


def run_schema_checks(*args: str) -> subprocess.CompletedProcess:
    command = [str(TOOLS / ".venv" / "bin" / "python"), str(TOOLS / "schema_checks.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=_env())


@pytest.fixture(scope="session")
def stack() -> subprocess.CompletedProcess:
    """The whole offline check stack on the repository, run once."""
    _require_tools()
    return subprocess.run([str(TOOLS / "ci_nfcheck.sh"), str(PROJECT_ROOT)], capture_output=True, text=True, env=_env(), timeout=900)


@pytest.fixture
def pipeline_copy(tmp_path) -> Path:
    _require_tools()
    root = tmp_path / "pipeline"
    for relative in PIPELINE_PATHS:
        source = PROJECT_ROOT / relative
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    return root


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not found in {path}"
    path.write_text(text.replace(old, new, 1))


# --- the repository passes --------------------------------------------------------------


def test_stack_passes(stack):
    assert stack.returncode == 0, stack.stdout[-4000:] + stack.stderr[-2000:]


def test_parse_check_is_clean(stack):
    assert re.search(r"nfparse: OK \(\d+ file\(s\)\)", stack.stdout), stack.stdout[-3000:]


def test_nfcore_lint_has_no_failures(stack):
    failed = re.findall(r"\[✗\]\s+(\d+) Tests? Failed", stack.stdout)
    assert failed and failed[-1] == "0", stack.stdout[-4000:]


def test_nfcore_schema_lint_is_valid(stack):
    assert "Pipeline schema looks valid" in stack.stdout + stack.stderr


def test_schema_checks_pass(stack):
    assert "schema checks: OK" in stack.stdout


def test_output_states_nothing_ran_in_nextflow(stack):
    assert "nf-test and Nextflow runs were not executed here" in stack.stdout


def test_pipeline_stub_run_with_nextflow(tmp_path):
    nextflow = shutil.which("nextflow")
    if nextflow is None:
        pytest.skip("nf-test and Nextflow runs were not executed here: no Nextflow runtime is installed")
    # The stub blocks run on the host: `shest` must be on PATH for the version outputs.
    result = subprocess.run(
        [nextflow, "run", str(PROJECT_ROOT / "main.nf"), "-profile", "test", "-stub-run", "--outdir", str(tmp_path / "results")],
        capture_output=True, text=True, cwd=tmp_path, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert (tmp_path / "results" / "multiqc" / "multiqc_report.html").is_file()


# --- broken copies fail ------------------------------------------------------------------


def test_copy_of_pipeline_parses(pipeline_copy):
    result = run_parse(pipeline_copy)
    assert result.returncode == 0, result.stdout


def test_missing_comma_in_output_fails(pipeline_copy):
    module = pipeline_copy / "modules/local/shest/qc/main.nf"
    replace_in(module, 'path("*.qc.json")        , emit: qc', 'path("*.qc.json") emit: qc')
    result = run_parse(pipeline_copy)
    assert result.returncode == 1, result.stdout
    assert "modules/local/shest/qc/main.nf" in result.stdout


def test_missing_output_declaration_fails(pipeline_copy):
    module = pipeline_copy / "modules/local/shest/mergecells/main.nf"
    replace_in(module, 'path("*_segmentation_mqc.tsv") , emit: mqc', 'path("*_segmentation_mqc.tsv") , emit: table')
    result = run_parse(pipeline_copy)
    assert result.returncode == 1, result.stdout
    assert "SHEST_MERGECELLS.out.mqc" in result.stdout


def test_include_of_undeclared_name_fails(pipeline_copy):
    workflow = pipeline_copy / "workflows/shest.nf"
    replace_in(workflow, "include { SHEST_NICHE            }", "include { SHEST_NICHES           }")
    result = run_parse(pipeline_copy)
    assert result.returncode == 1, result.stdout
    assert "'SHEST_NICHES' not declared" in result.stdout


def test_unknown_process_section_fails(pipeline_copy):
    replace_in(pipeline_copy / "modules/local/shest/infer/main.nf", "    output:", "    outputs:")
    result = run_parse(pipeline_copy)
    assert result.returncode == 1, result.stdout
    assert "unknown section 'outputs:'" in result.stdout


def test_config_syntax_error_fails(pipeline_copy):
    replace_in(pipeline_copy / "conf/modules.config", "withName: 'SHEST_QC' {", "withName: 'SHEST_QC' {{")
    result = run_parse(pipeline_copy)
    assert result.returncode == 1, result.stdout
    assert "conf/modules.config" in result.stdout


def test_schema_with_invalid_type_fails(pipeline_copy):
    schema_file = pipeline_copy / "nextflow_schema.json"
    schema = json.loads(schema_file.read_text())
    schema["$defs"]["qc_options"]["properties"]["tile_size_um"]["type"] = "numeric"
    schema_file.write_text(json.dumps(schema, indent=4))
    result = run_schema_checks(str(pipeline_copy))
    assert result.returncode == 1, result.stdout
    assert "not a valid draft 2020-12 schema" in result.stdout


def test_nfcore_schema_lint_rejects_invalid_type(pipeline_copy):
    schema_file = pipeline_copy / "nextflow_schema.json"
    schema = json.loads(schema_file.read_text())
    schema["$defs"]["qc_options"]["properties"]["tile_size_um"]["type"] = "numeric"
    schema_file.write_text(json.dumps(schema, indent=4))
    nf_core = TOOLS / ".venv" / "bin" / "nf-core"
    result = subprocess.run([str(nf_core), "--hide-progress", "pipelines", "schema", "lint", str(schema_file)],
                            capture_output=True, text=True, cwd=pipeline_copy, env=_env())
    assert result.returncode != 0, result.stdout[-2000:]


def test_param_missing_from_schema_fails(pipeline_copy):
    replace_in(pipeline_copy / "nextflow.config", "    seg_chunks                  = 8\n", "    seg_chunks                  = 8\n    seg_extra                   = 1\n")
    result = run_schema_checks(str(pipeline_copy), "--profile", "default")
    assert result.returncode == 1, result.stdout
    assert "params in config but not in schema (default): ['seg_extra']" in result.stdout


def test_default_that_differs_from_schema_fails(pipeline_copy):
    replace_in(pipeline_copy / "nextflow.config", "    seg_chunks                  = 8\n", "    seg_chunks                  = 3\n")
    result = run_schema_checks(str(pipeline_copy), "--profile", "default")
    assert result.returncode == 1, result.stdout
    assert "default of 'seg_chunks' differs" in result.stdout


def test_test_profile_with_wrong_type_fails(pipeline_copy):
    replace_in(pipeline_copy / "conf/test.config", "seg_chunks     = 2", "seg_chunks     = 'two'")
    result = run_schema_checks(str(pipeline_copy), "--profile", "test")
    assert result.returncode == 1, result.stdout
    assert "config params (test): $.seg_chunks" in result.stdout


# --- samplesheets ------------------------------------------------------------------------


def check_sheet(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    _require_tools()
    sheet = tmp_path / "samplesheet.csv"
    sheet.write_text(text)
    (tmp_path / "slides").mkdir(exist_ok=True)
    (tmp_path / "slides" / "a.svs").write_bytes(b"")
    (tmp_path / "slides" / "b.svs").write_bytes(b"")
    (tmp_path / "slides" / "c.mrxs").write_bytes(b"")
    (tmp_path / "slides" / "roi.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    return run_schema_checks("samplesheet", str(sheet), str(PROJECT_ROOT / "assets" / "schema_input.json"), "--base", str(tmp_path / "slides"))


def test_input_parameter_has_no_content_schema():
    # With a "schema" key, nf-schema's validateParameters() checks the samplesheet's
    # rows, and their relative paths against the launch directory, before --slide_dir
    # is applied to them. samplesheetToList() validates the resolved copy instead.
    schema = json.loads((PROJECT_ROOT / "nextflow_schema.json").read_text())
    input_parameter = next(group["properties"]["input"] for group in schema["$defs"].values()
                           if "input" in group.get("properties", {}))  # fmt: skip
    assert "schema" not in input_parameter
    utils = (PROJECT_ROOT / "subworkflows" / "local" / "utils_shest_pipeline" / "main.nf").read_text()
    assert 'samplesheetToList(samplesheet, "${projectDir}/assets/schema_input.json")' in utils


def test_test_samplesheet_is_valid():
    data_dir = Path(os.environ.get("SHEST_TEST_DATA", DATA_DIR))
    if not (data_dir / "wsi").is_dir():
        pytest.skip(f"test data not found under {data_dir}")
    _require_tools()
    result = run_schema_checks("samplesheet", str(PROJECT_ROOT / "assets" / "samplesheet_test.csv"),
                               str(PROJECT_ROOT / "assets" / "schema_input.json"), "--base", str(data_dir))
    assert result.returncode == 0, result.stdout


def test_samplesheet_with_optional_columns_is_valid(tmp_path):
    result = check_sheet(tmp_path, "sample,wsi,mpp,roi\nA,a.svs,0.25,roi.geojson\nB,b.svs,,\n")
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("case", "text", "expected"),
    [
        ("duplicate sample", "sample,wsi\nA,a.svs\nA,b.svs\n", "must be unique"),
        ("space in sample", "sample,wsi\nslide A,a.svs\n", "no spaces"),
        ("missing slide file", "sample,wsi\nA,missing.svs\n", "does not exist"),
        ("empty slide", "sample,wsi\nA,\n", "'wsi' is a required property"),
        ("mpp not a number", "sample,wsi,mpp\nA,a.svs,half\n", "between 0.05 and 2.0"),
        ("negative mpp", "sample,wsi,mpp\nA,a.svs,-0.5\n", "less than the minimum of 0.05"),
        ("roi not geojson", "sample,wsi,roi\nA,a.svs,b.svs\n", "GeoJSON"),
        ("mrxs slide", "sample,wsi\nA,c.mrxs\n", "MRXS and VMS slides keep their pixels in a companion folder"),
        ("sample too long", f"sample,wsi\n{'A' * 129},a.svs\n", "at most 128 characters"),
    ],
)
def test_invalid_samplesheet_is_rejected(tmp_path, case, text, expected):
    result = check_sheet(tmp_path, text)
    assert result.returncode == 1, result.stdout
    assert expected in result.stdout, result.stdout


# --- Groovy helpers of the pipeline --------------------------------------------------------


def call_function(tmp_path: Path, file: str, function: str, *arguments) -> object:
    _require_tools()
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps(list(arguments)))
    command = ["java", "-XX:TieredStopAtLevel=1", "-cp", str(TOOLS / "groovy4" / "*"), "groovy.ui.GroovyMain",
               str(TOOLS / "nffunction.groovy"), str(PROJECT_ROOT / file), function, str(args_file)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_relative_slide_paths_resolve_against_slide_dir(tmp_path):
    sheet = 'sample,wsi,mpp,roi\nA,wsi/a.svs,,\nB,/abs/b.svs,0.25,rois/b.geojson\nC,s3://bucket/c.svs,,\nD,"x,y.svs",,\n'
    resolved = call_function(tmp_path, "subworkflows/local/utils_shest_pipeline/main.nf", "resolveSamplesheetPaths", sheet, "/data")
    assert resolved.splitlines() == [
        "sample,wsi,mpp,roi",
        "A,/data/wsi/a.svs,,",
        "B,/abs/b.svs,0.25,/data/rois/b.geojson",
        "C,s3://bucket/c.svs,,",
        'D,"/data/x,y.svs",,',
    ]


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("# id: shest_segmentation\nSample\tnuclei\ttiles\nS\t1720\t26\n", 1720),
        ("# id: shest_segmentation\nSample\tnuclei\ttiles\nS\t0\t26\n", 0),
        ("Sample\ttiles\nS\t26\n", -1),
        ("# id: shest_segmentation\n", -1),
    ],
)
def test_nuclei_count_reads_segmentation_table(tmp_path, table, expected):
    count = call_function(tmp_path, "subworkflows/local/utils_shest_pipeline/main.nf", "nucleiCount", table)
    assert count == expected


# --- containers ------------------------------------------------------------------------------


def pyproject_requirements() -> dict[str, str]:
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(text).name.lower(): str(Requirement(text).specifier) for text in project["dependencies"]}


@pytest.mark.parametrize("recipe", ["Dockerfile", "Dockerfile.cuda", "shest.def", "shest-cuda.def"])
def test_container_torch_pins_match_pyproject(recipe):
    requirements = pyproject_requirements()
    text = (PROJECT_ROOT / "containers" / recipe).read_text()
    pins = [f"torch{requirements['torch']}", f"torchvision{requirements['torchvision']}"]
    assert [pin for pin in pins if pin not in text] == []


def test_constraints_satisfy_pyproject():
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    pinned = {}
    for line in (PROJECT_ROOT / "containers" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[Requirement(name).name.lower().replace("_", "-")] = version
    conflicts = {
        name: (spec, pinned.get(name.replace("_", "-")))
        for name, spec in pyproject_requirements().items()
        if pinned.get(name.replace("_", "-")) is None or pinned[name.replace("_", "-")] not in SpecifierSet(spec)
    }
    assert conflicts == {}
