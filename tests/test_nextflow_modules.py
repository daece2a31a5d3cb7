"""Each Nextflow module's command line, run for real outside Nextflow.

Groovy 4 renders the ``script:`` and ``stub:`` blocks of every module
(tests/nextflow/tools/nfrender.groovy) with the values a task of the ``test`` profile
gets: meta, staged input names, ``task.ext.args`` evaluated from conf/modules.config,
``task.cpus`` from conf/base.config capped by the profile's resourceLimits. The
rendered shell script then runs with the pipeline's bash options in a task folder, on
the CMU-1-Small-Region slide, and every declared output pattern must match a file. The
modules run as a chain (QC, one segmentation chunk, merge, inference with the demo
model, niches, cohort tables, MultiQC), each on the previous module's real outputs.

NOTE: this runs the modules' shell commands, not Nextflow: channel wiring, staging by
Nextflow, containers and publishing are not exercised, and nf-test was not run here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, data_file

import shest

pytestmark = pytest.mark.nextflow

TOOLS = PROJECT_ROOT / "tests" / "nextflow" / "tools"
SAMPLE = "CMU-1-Small-Region"
SECOND_SAMPLE = "CMU-copy"
# Bash options of `process.shell` in nextflow.config.
TASK_SHELL = ["bash", "-C", "-e", "-u", "-o", "pipefail"]
TASK_TIMEOUT_S = 300

MODULE_FILES = {
    "qc": "modules/local/shest/qc/main.nf",
    "segment": "modules/local/shest/segment/main.nf",
    "mergecells": "modules/local/shest/mergecells/main.nf",
    "infer": "modules/local/shest/infer/main.nf",
    "niche": "modules/local/shest/niche/main.nf",
    "nichecohort": "modules/local/shest/nichecohort/main.nf",
    "multiqc": "modules/nf-core/multiqc/main.nf",
}
# The `shest` subcommand each local module calls.
MODULE_COMMANDS = {
    "qc": "qc",
    "segment": "segment",
    "mergecells": "merge-cells",
    "infer": "infer",
    "niche": "niche",
    "nichecohort": "niche-cohort",
}


# --- tools ---------------------------------------------------------------------------


def _require_tools() -> None:
    for program in ("java", "npm"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed; the Groovy 4 renderer needs Java 17 and npm")
    subprocess.run([str(TOOLS / "install.sh")], check=True, capture_output=True, text=True)


def _groovy(script: str, *args: str) -> subprocess.CompletedProcess:
    classpath = str(TOOLS / "groovy4" / "*")
    command = ["java", "-XX:TieredStopAtLevel=1", "-cp", classpath, "groovy.ui.GroovyMain", str(TOOLS / script), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT)


@pytest.fixture(scope="session")
def profile_config() -> dict:
    """``nextflow config -profile test`` of the pipeline, from the offline shim."""
    _require_tools()
    env = {**os.environ, "NXF_OFFLINE": "true"}
    out = subprocess.run(
        [str(TOOLS / "nextflow"), "config", "-profile", "test", "-o", "json", str(PROJECT_ROOT)],
        capture_output=True, text=True, check=True, env=env,
    )
    return json.loads(out.stdout)


def render(requests: list[dict]) -> list[dict]:
    """Render modules with nfrender.groovy (one JVM for all requests)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(requests, handle)
    request_file = Path(handle.name)
    try:
        out = _groovy("nfrender.groovy", str(request_file))
    finally:
        request_file.unlink(missing_ok=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def make_request(module_file: str | Path, config: dict, meta: dict, inputs: dict, profile: str = "test") -> dict:
    return {
        "module": str(Path(PROJECT_ROOT, module_file)),
        "meta": meta,
        "inputs": inputs,
        "params": config["params"],
        "process_config": config["process"],
        "profile": profile,
        "projectDir": str(PROJECT_ROOT),
    }


def command_available(command: str) -> bool:
    """Return whether `shest COMMAND` is implemented; a placeholder prints "(not yet available)" in its help."""
    out = subprocess.run([str(Path(sys.executable).parent / "shest"), command, "--help"], capture_output=True, text=True)
    return out.returncode == 0 and "(not yet available)" not in out.stdout


# --- running a task ------------------------------------------------------------------


@dataclass
class Task:
    """A rendered module run in its own folder."""

    name: str
    rendered: dict
    workdir: Path
    staged: dict[str, Path]
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def output_files(self, pattern: str) -> list[Path]:
        """Files matching an output pattern, without the staged inputs (as Nextflow does)."""
        staged = {self.workdir / name for name in self.staged}
        return sorted(p for p in self.workdir.glob(pattern) if p not in staged and not p.name.startswith("."))

    def missing_outputs(self) -> list[str]:
        """Declared, non-optional output patterns that matched no file."""
        missing = []
        for output in self.rendered["outputs"]:
            if output["optional"]:
                continue
            for pattern in output["patterns"]:
                if not self.output_files(pattern):
                    missing.append(f"{output['emit']}: {pattern}")
        return missing


def stage_inputs(workdir: Path, staged: dict[str, Path]) -> None:
    for name, source in staged.items():
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(Path(source).resolve())


def run_task(name: str, rendered: dict, workdir: Path, staged: dict[str, Path], block: str = "script") -> Task:
    """Stage the inputs, run the rendered block with the pipeline's bash options, then the eval outputs."""
    assert rendered["errors"] == [], rendered["errors"]
    workdir.mkdir(parents=True, exist_ok=True)
    stage_inputs(workdir, staged)
    script = workdir / f".command.{block}.sh"
    script.write_text(rendered[block])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    out = subprocess.run([*TASK_SHELL, script.name], cwd=workdir, capture_output=True, text=True, env=env, timeout=TASK_TIMEOUT_S)
    task = Task(name, rendered, workdir, staged, out.returncode, out.stdout, out.stderr)
    for output in rendered["outputs"]:
        for command in output["evals"]:
            result = subprocess.run(["bash", "-c", command], cwd=workdir, capture_output=True, text=True, env=env)
            task.versions[output["emit"]] = result.stdout.strip() if result.returncode == 0 else f"FAILED: {result.stderr.strip()}"
    return task


def staged_name(task: Task, pattern: str, folder: str = "") -> tuple[str, Path]:
    """Return (staged name, source) of the one output of an upstream task that matches pattern."""
    files = task.output_files(pattern)
    assert len(files) == 1, f"{task.name}: expected one file for {pattern}, found {[f.name for f in files]}"
    return f"{folder}{files[0].name}", files[0]


# --- the chain of module runs ----------------------------------------------------------


class Chain:
    """Runs the modules one after the other on real data, each once per test session."""

    def __init__(self, config: dict, root: Path):
        self.config = config
        self.root = root
        self.slide = data_file(f"wsi/{SAMPLE}.svs")
        self.tasks: dict[str, Task] = {}

    def needs(self, name: str) -> None:
        command = MODULE_COMMANDS.get(name)
        if command and not command_available(command):
            pytest.skip(f"shest {command} is still a placeholder; the {name} module cannot run yet")

    def run(self, name: str) -> Task:
        """Run a module once (its upstream modules first) and return its task, failed or not."""
        if name not in self.tasks:
            self.needs(name)
            getattr(self, f"_run_{name}")()
        return self.tasks[name]

    def get(self, name: str) -> Task:
        """Return the task of a module that succeeded; a failure fails the calling test."""
        task = self.run(name)
        if task.returncode != 0:
            pytest.fail(f"{name} module failed upstream (exit {task.returncode}):\n{task.stderr[-3000:]}")
        return task

    def _run(self, name: str, meta: dict, staged: dict[str, Path], inputs: dict) -> None:
        rendered = render([make_request(MODULE_FILES[name], self.config, meta, inputs)])[0]
        self.tasks[name] = run_task(name, rendered, self.root / name, staged)

    def _run_qc(self) -> None:
        staged = {self.slide.name: self.slide}
        self._run("qc", {"id": SAMPLE, "mpp": None}, staged, {"wsi": self.slide.name, "roi": []})

    def _run_segment(self) -> None:
        plan_name, plan = staged_name(self.get("qc"), "*.tiles.json")
        staged = {self.slide.name: self.slide, plan_name: plan}
        # One task per chunk of the plan, as SEGMENT_SLIDE scatters them; the test
        # profile's plan has seg_chunks chunks. "segment" is chunk 0, the others follow.
        chunks = range(self.config["params"]["seg_chunks"])
        requests = [
            make_request(MODULE_FILES["segment"], self.config, {"id": SAMPLE, "mpp": None, "chunk": chunk},
                         {"wsi": self.slide.name, "plan": plan_name, "cellpose_model": []})
            for chunk in chunks
        ]
        for chunk, rendered in zip(chunks, render(requests)):
            name = "segment" if chunk == 0 else f"segment.{chunk}"
            self.tasks[name] = run_task(name, rendered, self.root / name, staged)

    def segment_tasks(self) -> list[Task]:
        self.get("segment")
        return [task for name, task in sorted(self.tasks.items()) if name.split(".")[0] == "segment"]

    def _run_mergecells(self) -> None:
        staged = {}
        for task in self.segment_tasks():
            assert task.returncode == 0, f"{task.name} failed:\n{task.stderr[-3000:]}"
            chunk_name, chunk = staged_name(task, "*.chunk-*.cells.parquet", "chunks/")
            staged[chunk_name] = chunk
        self._run("mergecells", {"id": SAMPLE, "mpp": None}, staged, {"chunks": sorted(staged)})

    def _run_infer(self) -> None:
        cells_name, cells = staged_name(self.get("mergecells"), "*.cells.parquet")
        staged = {self.slide.name: self.slide, cells_name: cells}
        inputs = {"wsi": self.slide.name, "cells": cells_name, "checkpoint": [], "backbone": [], "panel": []}
        self._run("infer", {"id": SAMPLE, "mpp": None}, staged, inputs)

    def _run_niche(self) -> None:
        h5ad_name, h5ad = staged_name(self.get("infer"), "*.h5ad")
        staged = {h5ad_name: h5ad, self.slide.name: self.slide}
        self._run("niche", {"id": SAMPLE, "mpp": None}, staged, {"h5ad": h5ad_name, "wsi": self.slide.name})

    def _run_nichecohort(self) -> None:
        tables = self.get("niche").output_files("*.csv")
        staged = {f"samples/{table.name}": table for table in tables}
        self._run("nichecohort", {"id": "cohort"}, staged, {"tables": sorted(staged)})

    def _run_multiqc(self) -> None:
        # Custom-content tables of every stage that has run, each in its own numbered
        # folder, as the `stageAs: "?/*"` of the module stages them.
        patterns = {"qc": "*_mqc.tsv", "mergecells": "*_mqc.tsv", "infer": "*_mqc.tsv", "niche": "*_mqc.tsv"}
        tables = []
        for name, pattern in patterns.items():
            command = MODULE_COMMANDS[name]
            if command_available(command):
                tables.extend(self.get(name).output_files(pattern))
        # A second sample (the same tables under another name) shows that MultiQC puts
        # the slides of a cohort in one table per section.
        copies = self.root / "multiqc-second-sample"
        copies.mkdir(exist_ok=True)
        for table in list(tables):
            copy = copies / table.name.replace(SAMPLE, SECOND_SAMPLE)
            lines = table.read_text().splitlines(keepends=True)
            copy.write_text("".join(SECOND_SAMPLE + line[len(SAMPLE):] if line.startswith(SAMPLE + "\t") else line for line in lines))
            tables.append(copy)
        staged = {f"{index}/{table.name}": table for index, table in enumerate(tables, start=1)}
        config_name = "c/multiqc_config.yml"
        staged[config_name] = PROJECT_ROOT / "assets" / "multiqc_config.yml"
        inputs = {
            "multiqc_files": sorted(name for name in staged if name != config_name),
            "multiqc_config": config_name,
            "multiqc_logo": [],
            "replace_names": [],
            "sample_names": [],
        }
        self._run("multiqc", {"id": "shest"}, staged, inputs)


@pytest.fixture(scope="session")
def chain(profile_config, tmp_path_factory) -> Chain:
    return Chain(profile_config, tmp_path_factory.mktemp("nf-tasks"))


@pytest.fixture(scope="session")
def rendered_modules(profile_config) -> dict[str, dict]:
    """Every module rendered once with placeholder inputs (for checks that run nothing)."""
    requests = []
    for name, module in MODULE_FILES.items():
        inputs = {
            "qc": {"wsi": "S.svs", "roi": []},
            "segment": {"wsi": "S.svs", "plan": "S.tiles.json", "cellpose_model": []},
            "mergecells": {"chunks": ["chunks/S.chunk-0000.cells.parquet"]},
            "infer": {"wsi": "S.svs", "cells": "S.cells.parquet", "checkpoint": [], "backbone": [], "panel": []},
            "niche": {"h5ad": "S.h5ad", "wsi": "S.svs"},
            "nichecohort": {"tables": ["samples/S.niche_enrichment.csv"]},
            "multiqc": {"multiqc_files": ["1/S_qc_mqc.tsv"], "multiqc_config": [], "multiqc_logo": [], "replace_names": [], "sample_names": []},
        }[name]
        requests.append(make_request(module, profile_config, {"id": "S", "mpp": 0.25, "chunk": 3}, inputs))
    return dict(zip(MODULE_FILES, render(requests)))


# --- tests: the rendered command lines ---------------------------------------------------


@pytest.mark.parametrize("name", list(MODULE_FILES))
def test_module_renders_without_errors(rendered_modules, name):
    assert rendered_modules[name]["errors"] == []


@pytest.mark.parametrize("name", list(MODULE_FILES))
def test_module_when_is_true_by_default(rendered_modules, name):
    assert rendered_modules[name]["when"] == "true"


@pytest.mark.parametrize("name", list(MODULE_COMMANDS))
def test_module_calls_its_shest_command(rendered_modules, name):
    assert re.search(rf"^\s*shest {MODULE_COMMANDS[name]} ", rendered_modules[name]["script"], re.M)


# Modules whose ext.args is not empty under the test profile.
@pytest.mark.parametrize("name", ["qc", "segment", "infer", "niche"])
def test_module_ext_args_come_last(rendered_modules, name):
    rendered = rendered_modules[name]
    args = rendered["ext"]["args"]
    assert bool(args)
    assert rendered["script"].rstrip().endswith(args)


def test_mergecells_passes_geojson_gzip(profile_config):
    config = {**profile_config, "params": {**profile_config["params"], "geojson_gzip": True}}
    rendered = render([make_request(MODULE_FILES["mergecells"], config, {"id": "S"}, {"chunks": ["chunks/S.chunk-0000.cells.parquet"]})])[0]
    assert rendered["script"].rstrip().endswith("--geojson-gzip")


@pytest.mark.parametrize("name", list(MODULE_COMMANDS))
def test_module_keeps_caches_in_task_folder(rendered_modules, name):
    script = rendered_modules[name]["script"]
    for variable in ("HOME", "MPLCONFIGDIR", "NUMBA_CACHE_DIR", "HF_HOME", "TORCH_HOME", "CELLPOSE_LOCAL_MODELS_PATH"):
        assert re.search(rf'\b{variable}="\$(PWD|HOME)/', script), f"{variable} does not point into the task folder"


@pytest.mark.parametrize("name", list(MODULE_COMMANDS))
def test_module_runs_hub_offline(rendered_modules, name):
    assert "HF_HUB_OFFLINE=1" in rendered_modules[name]["script"]


@pytest.mark.parametrize("name", list(MODULE_COMMANDS))
def test_module_container_matches_package_version(rendered_modules, name):
    suffix = "-cuda" if rendered_modules[name]["label"] == "process_gpu" else ""
    assert rendered_modules[name]["container"] == f"shest:{shest.__version__}{suffix}"


def test_infer_has_gpu_label(rendered_modules):
    assert rendered_modules["infer"]["label"] == "process_gpu"


def test_infer_device_follows_gpu_profile(profile_config):
    inputs = {"wsi": "S.svs", "cells": "S.cells.parquet", "checkpoint": [], "backbone": [], "panel": []}
    cpu, gpu = render([
        make_request(MODULE_FILES["infer"], profile_config, {"id": "S"}, inputs, profile="test"),
        make_request(MODULE_FILES["infer"], profile_config, {"id": "S"}, inputs, profile="test,gpu"),
    ])
    assert "--device cpu" in cpu["script"]
    assert "--device cuda" in gpu["script"]


def test_infer_builds_tiles_in_workers_only_on_gpu(profile_config):
    # Without an accelerator the model runs on the CPU and needs the cores itself.
    # process_gpu requests 8 CPUs, and the test profile caps tasks at 2.
    inputs = {"wsi": "S.svs", "cells": "S.cells.parquet", "checkpoint": [], "backbone": [], "panel": []}
    cpu, gpu = render([
        make_request(MODULE_FILES["infer"], profile_config, {"id": "S"}, inputs, profile="test"),
        make_request(MODULE_FILES["infer"], profile_config, {"id": "S"}, inputs, profile="test,gpu"),
    ])
    assert "--workers 0" in cpu["script"]
    assert "--workers 2" in gpu["script"]


def test_infer_passes_model_weights_as_staged_files(profile_config):
    inputs = {"wsi": "S.svs", "cells": "S.cells.parquet", "checkpoint": "shest.pt", "backbone": "H-optimus-0", "panel": "panel.csv"}
    rendered = render([make_request(MODULE_FILES["infer"], profile_config, {"id": "S"}, inputs)])[0]
    assert "--checkpoint shest.pt --backbone H-optimus-0 --panel panel.csv" in rendered["script"]


def test_segment_passes_chunk_and_mpp(rendered_modules):
    script = rendered_modules["segment"]["script"]
    assert "--chunk 3" in script
    assert "--mpp 0.25" in script


def test_versions_go_to_the_topic(rendered_modules):
    topics = {name: {o["topic"] for o in rendered_modules[name]["outputs"] if o["evals"]} for name in MODULE_COMMANDS}
    assert all(t == {"versions"} for t in topics.values()), topics


def test_multiqc_versions_stay_off_the_topic(rendered_modules):
    # MULTIQC reads the versions topic; sending its own version there would make it wait on itself.
    assert {o["topic"] for o in rendered_modules["multiqc"]["outputs"]} == {None}


# --- tests: the command lines run for real ------------------------------------------------


@pytest.mark.parametrize("name", list(MODULE_FILES))
def test_module_script_succeeds(chain, name):
    task = chain.run(name)
    assert task.returncode == 0, task.stderr[-3000:]


@pytest.mark.parametrize("name", list(MODULE_FILES))
def test_module_script_writes_declared_outputs(chain, name):
    assert chain.get(name).missing_outputs() == []


@pytest.mark.parametrize("name", list(MODULE_FILES))
def test_module_version_commands_succeed(chain, name):
    versions = chain.get(name).versions
    assert versions and all(re.fullmatch(r"\d[\w.+-]*", v) for v in versions.values()), versions


def test_every_segment_chunk_succeeds(chain):
    failed = {task.name: task.returncode for task in chain.segment_tasks() if task.returncode != 0 or task.missing_outputs()}
    assert failed == {}


def test_qc_plan_has_the_test_profile_chunks(chain):
    plan_file = chain.get("qc").output_files("*.tiles.json")[0]
    assert json.loads(plan_file.read_text())["chunks"] == chain.config["params"]["seg_chunks"]


def test_infer_output_is_marked_demo(chain):
    anndata = pytest.importorskip("anndata")
    h5ad = chain.get("infer").output_files("*.h5ad")[0]
    assert bool(anndata.read_h5ad(h5ad).uns["shest"]["demo"]) is True


@pytest.mark.parametrize("section", ["shest_qc", "shest_segmentation", "shest_celltypes", "shest_niche", "shest_infiltration"])
def test_multiqc_report_has_section(chain, section):
    producer = {"shest_qc": "qc", "shest_segmentation": "merge-cells", "shest_celltypes": "infer",
                "shest_niche": "niche", "shest_infiltration": "niche"}[section]
    if not command_available(producer):
        pytest.skip(f"shest {producer} is still a placeholder")
    report = chain.get("multiqc").output_files("*.html")[0]
    assert f'id="{section}' in report.read_text(encoding="utf-8")


@pytest.mark.parametrize("section", ["shest_qc", "shest_segmentation", "shest_celltypes", "shest_niche", "shest_infiltration"])
def test_multiqc_table_has_one_row_per_sample(chain, section):
    data_file_ = chain.get("multiqc").workdir / "multiqc_data" / "multiqc_data.json"
    saved = json.loads(data_file_.read_text())["report_saved_raw_data"]
    assert sorted(saved.get(f"multiqc_{section}_plot", {})) == sorted([SAMPLE, SECOND_SAMPLE])


# --- tests: stubs --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODULE_FILES))
def test_module_stub_writes_declared_outputs(rendered_modules, tmp_path, name):
    rendered = rendered_modules[name]
    staged = {}
    task = run_task(name, rendered, tmp_path / name, staged, block="stub")
    assert task.returncode == 0
    assert task.missing_outputs() == []


# --- tests: a module that disagrees with the CLI fails --------------------------------------


def test_renamed_option_fails_the_module(chain, profile_config, tmp_path):
    chain.needs("qc")
    broken = tmp_path / "qc" / "main.nf"
    broken.parent.mkdir()
    broken.write_text((PROJECT_ROOT / MODULE_FILES["qc"]).read_text().replace("--outdir .", "--output-dir ."))
    slide = chain.slide
    rendered = render([make_request(broken, profile_config, {"id": SAMPLE}, {"wsi": slide.name, "roi": []})])[0]
    task = run_task("qc-broken", rendered, tmp_path / "task", {slide.name: slide})
    assert task.returncode == 2
    assert "unrecognized arguments: --output-dir" in task.stderr


def test_wrong_output_pattern_is_reported(chain, profile_config, tmp_path):
    qc = chain.get("qc")
    broken = tmp_path / "qc" / "main.nf"
    broken.parent.mkdir()
    broken.write_text((PROJECT_ROOT / MODULE_FILES["qc"]).read_text().replace('"*.tiles.json"', '"*.plan.json"'))
    rendered = render([make_request(broken, profile_config, {"id": SAMPLE}, {"wsi": "S.svs", "roi": []})])[0]
    moved = Task("qc-broken", rendered, qc.workdir, qc.staged)
    assert moved.missing_outputs() == ["plan: *.plan.json"]


@pytest.mark.parametrize(("exit_status", "strategy"), [(3, "ignore"), (1, "finish"), (137, "retry")])
def test_infer_ignores_slides_without_usable_nuclei(profile_config, exit_status, strategy):
    # shest exits with 3 when a stage has nothing to work on; SHEST_INFER skips that slide.
    closure = profile_config["process"]["withName:SHEST_INFER"]["errorStrategy"]
    classpath = str(TOOLS / "groovy4" / "*")
    script = f"def task = [exitStatus: {exit_status}]\ndef strategy = {closure}\nprint strategy()"
    result = subprocess.run(["java", "-cp", classpath, "groovy.ui.GroovyMain", "-e", script],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert result.stdout == strategy
