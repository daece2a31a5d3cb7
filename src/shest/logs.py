"""Logging set-up and progress reporting that stays readable in cluster logs."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def setup_logging(verbosity: int = 0) -> None:
    """Configure the root logger: INFO by default, DEBUG with ``-v``, quiet libraries.

    Parameters
    ----------
    verbosity
        0 for INFO, 1 or more for DEBUG on the ``shest`` loggers. Third-party
        loggers stay at WARNING unless verbosity is 2 or more.
    """
    level = logging.DEBUG if verbosity >= 1 else logging.INFO
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    logging.getLogger("shest").setLevel(level)


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    logger: logging.Logger | None = None,
    min_interval_s: float = 30.0,
) -> Iterator[T]:
    """Yield from ``iterable`` while reporting progress.

    On an interactive terminal this draws a tqdm bar. Otherwise (a batch job whose
    stderr goes to a file) it logs one line at most every ``min_interval_s`` seconds
    and a final line, so cluster logs are not flooded with carriage returns.

    Every stage labels its loop the same way: ``desc`` names the stage or analysis
    (``QC``, ``segmentation``, ``inference``, ``Moran's I``) and ``unit`` the thing
    counted, singular as in tqdm (``tile``, ``batch``, ``gene block``), so a line
    reads ``segmentation: 18/40 tile (45%), 0.6 tile/s``.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr)
        return

    log = logger or logging.getLogger("shest.progress")
    start = last = time.monotonic()
    count = 0
    for item in iterable:
        yield item
        count += 1
        now = time.monotonic()
        if now - last >= min_interval_s:
            last = now
            log.info("%s: %s", desc, _progress_text(count, total, unit, now - start))
    log.debug("%s: done, %s", desc, _progress_text(count, total, unit, time.monotonic() - start))


def _progress_text(count: int, total: int | None, unit: str, elapsed: float) -> str:
    rate = count / elapsed if elapsed > 0 else float("nan")
    if total:
        return f"{count}/{total} {unit} ({100 * count / total:.0f}%), {rate:.1f} {unit}/s"
    return f"{count} {unit}, {rate:.1f} {unit}/s"
