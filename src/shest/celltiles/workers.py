"""Build tile panes in worker processes, in batch order, with a bounded number of batches in flight.

A GPU runs H-optimus-0 on far more tiles per second than one CPU core builds, so
tile building is spread over worker processes. Each worker opens the slide itself,
receives :class:`~shest.celltiles.windows.CellBatch` descriptions (a few kilobytes)
and returns :class:`~shest.celltiles.quadruple.PaneBatch` panes (about 200 KB per
cell). Batches come back in the order they were planned, whichever worker finishes
first, so the output does not depend on the number of workers. At most
``2 * workers`` batches are queued or finished and waiting, which bounds memory.

Workers are started with the ``forkserver`` method where the platform has it (else
``spawn``), never by forking the calling process, whose threads (PyTorch, CUDA) do
not survive a fork.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from shest.celltiles.geometry import TileGeometry
from shest.celltiles.quadruple import PaneBatch
from shest.celltiles.windows import CellBatch, build_cell_batch, plan_cell_batches

log = logging.getLogger(__name__)

# Batches queued or finished per worker: one being built, one waiting to be sent.
BATCHES_PER_WORKER = 2
# Minimum number of batches per worker process: smaller jobs use fewer workers or none.
MIN_BATCHES_PER_WORKER = 8
# Upper bound of the default worker count on a GPU.
# NOTE: an estimate, not measured: no GPU was available to find how many workers keep
# H-optimus-0 busy. At 900-1,600 tiles/s per worker, 4 workers give several thousand.
DEFAULT_MAX_WORKERS = 4

# State of a worker process, set once by _start_worker.
_worker_slide = None
_worker_geometry: TileGeometry | None = None


def available_cpus() -> int:
    """Return the number of CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_workers(device_type: str) -> int:
    """Return the default number of tile workers for a model on ``device_type``.

    On a GPU: one per available CPU, at most 4. On the CPU: none, because the model
    needs the cores itself. With the demo model on 2 cores, workers lowered the
    inference rate from 518 to about 320 cells/s (docs/benchmarks.md), and with
    H-optimus-0 on the CPU tile building is a negligible share of the time.
    """
    if device_type == "cpu":
        return 0
    return min(DEFAULT_MAX_WORKERS, available_cpus())


def effective_workers(slide, n_cells: int, batch_size: int, workers: int) -> int:
    """Return how many worker processes :func:`iter_pane_batches` starts for this request (0: none).

    Each worker gets at least :data:`MIN_BATCHES_PER_WORKER` batches, because
    starting one takes a second or more, and none are started for slides read
    through Pillow, which every worker would hold whole in memory.
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, found {workers}")
    n_batches = -(-int(n_cells) // batch_size)
    in_memory = getattr(slide, "backend", None) == "pillow" or not hasattr(slide, "path")
    if in_memory:
        return 0
    return min(workers, n_batches // MIN_BATCHES_PER_WORKER)


def _start_worker(slide_path: str, mpp: float, geometry: TileGeometry) -> None:
    import torch

    from shest.slide import open_slide

    global _worker_slide, _worker_geometry
    # One thread per worker: the workers themselves are the parallelism.
    torch.set_num_threads(1)
    _worker_slide = open_slide(slide_path, mpp=mpp)
    _worker_geometry = geometry


def _build_in_worker(batch: CellBatch) -> PaneBatch:
    assert _worker_slide is not None and _worker_geometry is not None, "worker not initialised"
    return build_cell_batch(_worker_slide, batch, _worker_geometry)


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # The server imports these once; each worker forked from it starts with them loaded.
        context.set_forkserver_preload([__name__, "shest.slide"])
        return context
    return multiprocessing.get_context("spawn")


def iter_pane_batches(
    slide,
    cx: np.ndarray,
    cy: np.ndarray,
    geometries: Sequence,
    geometry: TileGeometry,
    batch_size: int,
    workers: int = 0,
) -> Iterator[PaneBatch]:
    """Yield the panes of the selected cells batch by batch, in block order.

    Parameters
    ----------
    slide
        An open :class:`shest.slide.Slide`. Worker processes open ``slide.path``
        themselves, at the same µm/px.
    cx, cy, geometries, geometry, batch_size
        As for :func:`shest.celltiles.windows.plan_cell_batches`.
    workers
        Worker processes requested; :func:`effective_workers` gives the number
        started. With none, the panes are built in the calling thread.

    Raises
    ------
    RuntimeError
        A worker process failed to start (for example, it could not open the slide)
        or stopped without finishing its batch (for example, killed for lack of
        memory). Errors a worker raises while building a batch are raised as they are.
    """
    workers = effective_workers(slide, np.asarray(cx).size, batch_size, workers)
    batches = plan_cell_batches(cx, cy, geometries, geometry, batch_size)
    if workers == 0:
        for batch in batches:
            yield build_cell_batch(slide, batch, geometry)
        return
    yield from _iter_with_workers(slide, batches, geometry, workers)


def _iter_with_workers(slide, batches: Iterator[CellBatch], geometry: TileGeometry, workers: int) -> Iterator[PaneBatch]:
    log.info("Building tiles in %d worker processes", workers)
    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_context(),
        initializer=_start_worker,
        initargs=(str(slide.path), float(slide.mpp), geometry),
    )
    pending: collections.deque[Future] = collections.deque()
    try:
        # Once a worker has died, both submit() and result() raise BrokenProcessPool,
        # whichever the timing reaches first.
        for batch in batches:
            pending.append(executor.submit(_build_in_worker, batch))
            if len(pending) >= BATCHES_PER_WORKER * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BrokenProcessPool as exc:
        raise RuntimeError(
            f"A tile worker process failed ({exc}). Its own error, if it raised one, is printed above; a worker "
            "killed for lack of memory prints none. Rerun with fewer --workers or a smaller --batch-size, or with "
            "--workers 0 to build the tiles in the main process."
        ) from exc
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
