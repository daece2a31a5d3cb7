"""Run every stage for one slide, logging timings and skipping completed stages."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from shest.errors import EmptyResultError, InputError, ShestError
from shest.pipeline.resume import clear_record, is_complete, mark_complete
from shest.pipeline.stages import Stage, plan_stages

log = logging.getLogger(__name__)


def run_pipeline(options, parser) -> list[tuple[str, str, float]]:
    """Run the stages of one slide in order.

    Parameters
    ----------
    options
        Parsed ``shest run`` arguments.
    parser
        The top-level ``shest`` argument parser, used to parse each stage's command
        line exactly as the CLI (and the Nextflow processes) would.

    Returns
    -------
    list of (stage name, "ran" or "skipped", seconds)
    """
    stages = plan_stages(options)
    check_command_lines(stages, parser)
    with output_lock(Path(options.outdir)):
        return _run_stages(stages, options, parser)


def check_command_lines(stages: list[Stage], parser) -> None:
    """Parse every stage's command line before the first stage runs.

    A mistyped option in ``--segment-args`` is thus reported before QC has run, not
    after it. A value of the wrong type still ends the run here, with argparse's
    message naming the subcommand.

    Raises
    ------
    InputError
        A stage's command line holds options that its subcommand does not know.
    """
    for stage in stages:
        _, unknown = parser.parse_known_args(stage.command_line)
        if unknown:
            source = f" (from {stage.args_option})" if stage.args_option else ""
            raise InputError(
                f"shest {stage.argv[0]} does not accept {' '.join(unknown)}{source}; "
                f"see 'shest {stage.argv[0]} --help' for its options."
            )


@contextlib.contextmanager
def output_lock(outdir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``outdir`` so two runs cannot interleave their outputs.

    The lock is an advisory ``flock`` on a hidden file in the folder, released when
    the process ends even if it is killed. NOTE: flock is not reliable on some network
    filesystems (older NFS), where two runs may still write into the same folder.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    lock_path = outdir / ".shest-run.lock"
    with open(lock_path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"Another shest run is writing to {outdir} (it holds {lock_path.name}); "
                "wait for it to finish or choose another --outdir."
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_stages(stages: list[Stage], options, parser) -> list[tuple[str, str, float]]:
    summary: list[tuple[str, str, float]] = []
    start_all = time.monotonic()
    for index, stage in enumerate(stages, start=1):
        label = f"[{index}/{len(stages)}] {stage.name}"
        if not options.force and is_complete(stage):
            log.info("%s: outputs complete, skipping (use --force to redo)", label)
            summary.append((stage.name, "skipped", 0.0))
        else:
            summary.append(_run_and_record(stage, label, parser))
        if stage.name == "qc":
            _stop_if_no_tissue(stage)
    log.info("All %d stages finished in %.1f s; outputs in %s", len(stages), time.monotonic() - start_all, options.outdir)
    return summary


def _run_and_record(stage: Stage, label: str, parser) -> tuple[str, str, float]:
    """Run one stage and write its completion record; return its summary row."""
    clear_record(stage)
    log.info("%s: %s", label, stage.describe())
    start = time.monotonic()
    _run_stage(stage, parser)
    elapsed = time.monotonic() - start
    mark_complete(stage)
    log.info("%s: done in %.1f s", label, elapsed)
    return stage.name, "ran", elapsed


def _stop_if_no_tissue(stage: Stage) -> None:
    """Raise when QC found no tissue, instead of segmenting and predicting nothing."""
    from shest.tiling import TilePlan

    plan_file = next(path for path in stage.outputs if path.name.endswith(".tiles.json"))
    plan = TilePlan.load(plan_file)
    if len(plan) == 0:
        qc_json = plan_file.with_name(plan_file.name.replace(".tiles.json", ".qc.json"))
        raise EmptyResultError(
            f"No tissue detected in {plan.slide_name}, so there is nothing to segment; QC outputs are in "
            f"{plan_file.parent} (warnings in {qc_json.name}). If the slide has tissue, check the thumbnail, "
            "--roi and the tissue options of shest qc (pass them with --qc-args)."
        )


def _run_stage(stage: Stage, parser) -> None:
    args = parser.parse_args(stage.command_line)
    args.verbose = 0
    result = args.handler(args)
    if result:
        raise ShestError(f"Stage {stage.name} failed with exit code {result}: {stage.describe()}")
