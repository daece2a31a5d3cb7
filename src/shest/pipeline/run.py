"""Run every stage for one slide, logging timings and skipping completed stages."""

from __future__ import annotations

import logging
import time

from shest.errors import ShestError
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
    summary: list[tuple[str, str, float]] = []
    start_all = time.monotonic()
    for index, stage in enumerate(stages, start=1):
        label = f"[{index}/{len(stages)}] {stage.name}"
        if not options.force and is_complete(stage):
            log.info("%s: outputs complete, skipping (use --force to redo)", label)
            summary.append((stage.name, "skipped", 0.0))
            continue
        clear_record(stage)
        log.info("%s: %s", label, stage.describe())
        start = time.monotonic()
        _run_stage(stage, parser)
        elapsed = time.monotonic() - start
        mark_complete(stage)
        log.info("%s: done in %.1f s", label, elapsed)
        summary.append((stage.name, "ran", elapsed))
    log.info("All %d stages finished in %.1f s; outputs in %s", len(stages), time.monotonic() - start_all, options.outdir)
    return summary


def _run_stage(stage: Stage, parser) -> None:
    args = parser.parse_args(stage.command_line)
    args.verbose = 0
    result = args.handler(args)
    if result:
        raise ShestError(f"Stage {stage.name} failed with exit code {result}: {stage.describe()}")
