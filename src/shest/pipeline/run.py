"""Run every stage for one slide, logging timings and skipping completed stages."""

from __future__ import annotations

import argparse
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
    resolve_segmentation_model(stages, options, parser)
    with output_lock(Path(options.outdir)):
        return _run_stages(stages, options, parser)


# Options of the stage subcommands that `shest run` always decides itself, whether or
# not it passes them: a different value in a --<stage>-args string would put the
# stage's files elsewhere or make them disagree with the other stages.
RUN_OWNED_DESTS = frozenset({"sample", "outdir", "mpp", "roi", "plan", "cells", "geojson_gzip", "chunk", "slide"})

# Stage options whose shest run counterpart has another name.
RUN_OPTION_NAMES = {"--backend": "--segmenter", "slide": "--wsi", "--slide": "--wsi"}


def check_command_lines(stages: list[Stage], parser) -> None:
    """Parse every stage's command line before the first stage runs.

    A mistyped option in ``--segment-args`` is thus reported before QC has run, not
    after it. A value of the wrong type still ends the run here, with argparse's
    message naming the subcommand.

    Raises
    ------
    InputError
        A stage's command line contains options that its subcommand does not know, or
        its ``--<stage>-args`` set an option that ``shest run`` sets itself.
    """
    for stage in stages:
        parsed, unknown = parser.parse_known_args(stage.command_line)
        source = f" (from {stage.args_option})" if stage.args_option else ""
        if unknown:
            raise InputError(
                f"shest {stage.argv[0]} does not accept {' '.join(unknown)}{source}; "
                f"see 'shest {stage.argv[0]} --help' for its options."
            )
        owned = _owned_options(stage, vars(parsed), parser, _subcommand_parser(parser, stage.argv[0]))
        if owned:
            run_options = ", ".join(RUN_OPTION_NAMES.get(option, option) for option in owned)
            raise InputError(
                f"{stage.args_option} sets {', '.join(owned)}, which shest run already decides for shest "
                f"{stage.argv[0]}; give shest run's own option instead ({run_options}) or leave it to shest run."
            )


def _subcommand_parser(parser, name: str):
    for action in parser._actions:  # argparse offers no public way to reach a subparser
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise ValueError(f"The parser has no subcommand {name!r}")


def _owned_options(stage: Stage, with_extra: dict, parser, subparser) -> list[str]:
    """Return the options that ``stage.extra_args`` change although ``shest run`` decides them.

    ``with_extra`` is the parsed full command line. It is compared with the line
    parsed without the extra arguments, so aliases and abbreviations (``--segmenter``,
    ``--samp``) count too.
    """
    by_option = subparser._option_string_actions
    run_dests = {by_option[token].dest for token in stage.argv if token in by_option} | RUN_OWNED_DESTS
    without = vars(parser.parse_known_args([*stage.argv, *stage.runtime_args])[0])
    owned = []
    for action in subparser._actions:
        if action.dest in run_dests and without.get(action.dest) != with_extra.get(action.dest):
            owned.append(action.option_strings[0] if action.option_strings else action.dest)
    return owned


def resolve_segmentation_model(stages: list[Stage], options, parser) -> None:
    """Find (or download) the Cellpose model before QC runs, so a missing model fails at once.

    Nothing is done when segmentation uses the watershed backend or is complete
    already (and will be skipped).

    Raises
    ------
    CheckpointError
        The model is neither in the Cellpose model folder nor downloadable (see
        :func:`shest.segmentation.cellpose_backend.resolve_model`).
    """
    stage = next((item for item in stages if item.name == "segmentation"), None)
    if stage is None or (not options.force and is_complete(stage)):
        return
    args, _ = parser.parse_known_args(stage.command_line)
    if args.backend != "cellpose":
        return
    from shest.segmentation.cellpose_backend import resolve_model

    resolve_model(args.cellpose_model)


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
    _warn_if_niche_is_stale(summary, options)
    return summary


def _warn_if_niche_is_stale(summary: list[tuple[str, str, float]], options) -> None:
    """Warn when inference ran again but an earlier run's niche results were left as they were."""
    inference_ran = any(name == "inference" and status == "ran" for name, status, _ in summary)
    niche_dir = Path(options.outdir) / "niche"
    if options.niche or not inference_ran or not niche_dir.is_dir() or not any(niche_dir.iterdir()):
        return
    log.warning(
        "%s contains niche results of an earlier inference, which this run replaced; they no longer match "
        "the cells. Rerun with --niche to update them, or remove %s before collecting reports (MultiQC).",
        niche_dir, niche_dir,
    )  # fmt: skip


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
