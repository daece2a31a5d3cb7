"""Run a SHEST model over batches of quadruple tiles and collect per-cell results.

A background thread takes the next batch of tile panes from its source (worker
processes, or tile building in that thread) while the model runs on the previous
batch. Each batch is assembled into tiles on the model's device.
Class, probability and embedding go straight into arrays preallocated for all cells and
expression is kept as sparse rows, so memory contains the outputs plus a few batches,
whatever the cell count.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from shest.celltiles.quadruple import PaneBatch
from shest.device import resolve_device
from shest.errors import InputError
from shest.logs import progress
from shest.model.heads import expected_counts
from shest.model.network import ShestModel

log = logging.getLogger(__name__)

T = TypeVar("T")
PRECISION_CHOICES = ("auto", "bf16", "fp32")


@dataclass
class Predictions:
    """Per-cell model outputs, rows in the order of the selected cells."""

    class_index: np.ndarray
    probability: np.ndarray
    counts: "scipy.sparse.csr_matrix"  # noqa: F821 - imported where built
    embedding: np.ndarray
    seconds: float

    @property
    def n_cells(self) -> int:
        return int(self.class_index.size)


# glibc's mallopt parameter number for the mmap threshold (malloc.h).
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20


def fix_mmap_threshold() -> bool:
    """Make glibc serve allocations of 1 MiB and more by mmap, returning them to the system when freed.

    By default glibc raises that threshold after the first large blocks are freed. The
    tile batches (tens of MiB, allocated in the tile thread and freed in the model
    thread) then fragment the heap, and resident memory crept up by about 100 MiB over
    400 batches on Linux. Returns False where glibc is not the C library (nothing changes).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


def choose_device(request: str = "auto") -> torch.device:
    """Return the inference device: CUDA when available (``auto``), else the CPU; the choice is logged.

    See :func:`shest.device.resolve_device`, which also raises the errors.
    """
    return resolve_device(request, purpose="Inference")


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` PyTorch intra-op threads (unchanged when None), then restore the setting."""
    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def autocast_context(device: torch.device, precision: str = "auto"):
    """Return the autocast context: bfloat16 on CUDA (as the SHEST authors ran it) unless ``fp32`` is asked."""
    if precision not in PRECISION_CHOICES:
        raise InputError(f"Unknown precision {precision!r}; choose one of {', '.join(PRECISION_CHOICES)}.")
    # NOTE: the CUDA path (bfloat16 autocast, asynchronous copies) is not exercised by the
    # test suite, which runs on CPU-only machines.
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield from ``items`` while a background thread computes up to ``depth`` items ahead.

    An exception in the producer is raised in the consumer; stopping the consumer early
    stops the producer.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            buffer.put((done, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            buffer.put((done, exc))

    worker = threading.Thread(target=produce, name="shest-tiles", daemon=True)
    worker.start()
    try:
        while True:
            item, error = buffer.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            while True:
                buffer.get_nowait()
        worker.join(timeout=5)


def predict_cells(
    model: ShestModel,
    batches: Iterable[PaneBatch],
    n_cells: int,
    device: torch.device,
    precision: str = "auto",
    batch_size: int | None = None,
) -> Predictions:
    """Run the model on batches of tile panes and return the outputs of all ``n_cells`` cells.

    Each batch is copied to ``device`` as panes and assembled into normalised tiles
    there, with the model's input statistics.

    Parameters
    ----------
    model
        The network and the labels of its outputs.
    batches
        Panes of the cells, each batch with its row positions (0 .. n_cells - 1).
    n_cells
        Number of cells; every position must occur once.
    device
        Device from :func:`choose_device`.
    precision
        ``auto`` (bfloat16 autocast on CUDA, float32 on the CPU), ``bf16`` or ``fp32``.
    batch_size
        Cells per batch, used for progress reporting and, on the CPU, to reuse one tile buffer.
    """
    from scipy import sparse

    fix_mmap_threshold()
    network = model.network.to(device).eval()
    mean, std = model.normalization["mean"], model.normalization["std"]
    class_index = np.full(n_cells, -1, dtype=np.int16)
    probability = np.zeros(n_cells, dtype=np.float32)
    embedding = np.zeros((n_cells, model.embedding_dim), dtype=np.float16)
    count_rows: list[sparse.csr_matrix] = []
    count_positions: list[np.ndarray] = []
    total = math.ceil(n_cells / batch_size) if batch_size else None
    # On the CPU one buffer serves every batch: a fresh 38 MB tensor per batch of 64
    # would be page-faulted in anew each time, because large blocks are returned to the
    # system when freed (see fix_mmap_threshold).
    buffer: torch.Tensor | None = None

    start = time.monotonic()
    with torch.inference_mode(), autocast_context(device, precision):
        for batch in progress(prefetch(batches), total=total, desc="inference", unit="batch", logger=log):
            out = None
            if device.type == "cpu":
                buffer = _tile_buffer(buffer, batch, batch_size)
                out = buffer[: len(batch)]
            tiles = batch.to_tiles(device, mean=mean, std=std, out=out)
            emb, log_probability, mean_counts, _, zero_probability = network(tiles)
            positions = batch.positions
            best, index = log_probability.float().max(dim=1)
            class_index[positions] = index.cpu().numpy().astype(np.int16)
            probability[positions] = best.exp().cpu().numpy()
            embedding[positions] = emb.float().cpu().numpy().astype(np.float16)
            counts = expected_counts(mean_counts, zero_probability).cpu().numpy()
            count_rows.append(sparse.csr_matrix(counts))
            count_positions.append(np.asarray(positions))
    seconds = time.monotonic() - start

    missing = int((class_index < 0).sum())
    if missing:
        raise RuntimeError(f"{missing} of {n_cells} cells received no prediction")
    if count_rows:
        order = np.argsort(np.concatenate(count_positions), kind="stable")
        counts_matrix = sparse.vstack(count_rows, format="csr")[order]
    else:
        counts_matrix = sparse.csr_matrix((0, len(model.genes)), dtype=np.int32)
    counts_matrix = counts_matrix.astype(np.int32)
    log.info(
        "Inference: %d cells in %.1f s (%.1f cells/s) on %s", n_cells, seconds, n_cells / max(seconds, 1e-9), device
    )
    return Predictions(class_index, probability, counts_matrix, embedding, seconds)


def _tile_buffer(buffer: torch.Tensor | None, batch: PaneBatch, batch_size: int | None) -> torch.Tensor:
    """Return a CPU float32 buffer with room for ``batch``'s tiles, reusing ``buffer`` when it is large enough."""
    n, channels, pane, _ = batch.rgb.shape
    if buffer is not None and buffer.shape[0] >= n and tuple(buffer.shape[1:]) == (channels, 2 * pane, 2 * pane):
        return buffer
    return torch.empty((max(n, batch_size or 0), channels, 2 * pane, 2 * pane), dtype=torch.float32)
