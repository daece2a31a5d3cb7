"""Skip stages whose outputs are complete and whose inputs and command are unchanged.

After a stage succeeds, ``shest run`` writes a small JSON record beside its outputs: the
command line, the package version, and the size and modification time of every input
and every output. A rerun skips the stage only when that record matches, so a changed
parameter, a new slide file, or a deleted, truncated or replaced output makes the stage
run again. A later stage whose input was rewritten runs again too. Options that change
only the speed of a stage (``--workers``) are left out of the record.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from shest import __version__
from shest.errors import ShestError
from shest.io.atomic import atomic_path
from shest.pipeline.stages import Stage

log = logging.getLogger(__name__)


def record_path(stage: Stage) -> Path:
    """Return the completion record of a stage: a hidden file in its first output's folder."""
    first = stage.outputs[0]
    return first.parent / f".{stage.name}.done.json"


def file_stats(paths) -> dict[str, dict[str, int]]:
    """Return the size and modification time of each file, keyed by its absolute path."""
    stats = {}
    for path in paths:
        stat = Path(path).stat()
        stats[str(Path(path).resolve())] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return stats


def fingerprint(stage: Stage, with_outputs: bool = True) -> dict[str, Any]:
    """Return what must be unchanged for a completed stage to be reused.

    Outputs are included so that a result file edited, truncated or replaced since the
    stage finished makes the stage run again.
    """
    record = {"version": __version__, "command": stage.options_line, "inputs": file_stats(stage.inputs)}
    if with_outputs:
        record["outputs"] = file_stats(stage.outputs)
    return record


def is_complete(stage: Stage) -> bool:
    """Return whether the stage can be skipped; log the reason when it cannot."""
    record = record_path(stage)
    if not record.exists():
        return False
    missing = [str(path) for path in stage.outputs if not path.exists()]
    if missing:
        log.info("Stage %s: rerunning because outputs are missing: %s", stage.name, ", ".join(missing))
        return False
    try:
        saved = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    current = fingerprint(stage)
    if {key: saved.get(key) for key in ("version", "command", "inputs")} != fingerprint(stage, with_outputs=False):
        log.info("Stage %s: rerunning because its inputs or options changed since the last run", stage.name)
        return False
    if saved.get("outputs") != current["outputs"]:
        log.info("Stage %s: rerunning because its outputs changed since it finished", stage.name)
        return False
    return True


def mark_complete(stage: Stage) -> None:
    """Write the completion record after every output of the stage exists."""
    missing = [str(path) for path in stage.outputs if not path.exists()]
    if missing:
        raise ShestError(
            f"Stage {stage.name} finished but did not write: {', '.join(missing)}. An option passed with "
            f"--{stage.argv[0]}-args may have changed the output names (for example --geojson-gzip, which "
            "`shest run` takes as its own option)."
        )
    with atomic_path(record_path(stage)) as tmp:
        tmp.write_text(json.dumps(fingerprint(stage), indent=1, sort_keys=True) + "\n", encoding="utf-8")


def clear_record(stage: Stage) -> None:
    record_path(stage).unlink(missing_ok=True)
