"""Choose the torch device for a stage from the ``--device`` option (``auto``, ``cpu`` or ``cuda``).

Segmentation and inference resolve ``--device`` here, so both log the same way and
fail the same way. torch is imported inside the function, so the CLI modules can
import :data:`DEVICE_CHOICES` without loading it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shest.errors import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(request: str = "auto", purpose: str = "Inference", allow_mps: bool = False) -> torch.device:
    """Return the torch device for ``request`` and log the choice.

    Parameters
    ----------
    request
        ``auto`` takes CUDA when PyTorch detects a GPU, then Apple MPS when
        ``allow_mps`` is set, else the CPU, and logs the CPU fallback. ``cpu`` and
        ``cuda`` are taken as given.
    purpose
        What the device runs, for the log line (``Inference``, ``Cellpose``).
    allow_mps
        Let ``auto`` choose Apple's MPS device. Cellpose supports it. SHEST inference
        leaves it off, since its bfloat16 autocast path is written for CUDA.

    Raises
    ------
    InputError
        ``request`` is not one of :data:`DEVICE_CHOICES`, or ``cuda`` was requested
        and PyTorch finds no CUDA device.
    """
    import torch

    if request not in DEVICE_CHOICES:
        raise InputError(f"Unknown device {request!r}: use one of {', '.join(DEVICE_CHOICES)}.")
    cuda = torch.cuda.is_available()
    if request == "cuda" and not cuda:
        raise InputError(
            f"--device cuda was requested but PyTorch finds no CUDA device (torch {torch.__version__}, built for "
            f"CUDA {torch.version.cuda}); check the driver and CUDA_VISIBLE_DEVICES, or use --device auto or cpu."
        )
    if request == "cuda" or (request == "auto" and cuda):
        device = torch.device("cuda")
        log.info("%s device: CUDA (%s)", purpose, torch.cuda.get_device_name(device))
        return device
    if request == "auto" and allow_mps and _mps_available(torch):
        device = torch.device("mps")
        log.info("%s device: Apple MPS", purpose)
        return device
    if request == "auto":
        log.info("No GPU found: %s runs on the CPU, which is much slower", purpose)
    log.info("%s device: CPU, %d threads", purpose, torch.get_num_threads())
    return torch.device("cpu")


def _mps_available(torch) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()
