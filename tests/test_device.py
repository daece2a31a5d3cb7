"""Device choice shared by segmentation and inference: auto, cpu and cuda."""

from __future__ import annotations

import logging

import pytest
import torch

from shest.device import DEVICE_CHOICES, resolve_device
from shest.errors import InputError


def test_cpu_on_request():
    assert resolve_device("cpu").type == "cpu"


def test_unknown_device_is_an_error():
    with pytest.raises(InputError, match="Unknown device 'tpu'"):
        resolve_device("tpu")


def test_cuda_without_gpu_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(InputError, match="no CUDA device"):
        resolve_device("cuda")


def test_auto_falls_back_to_cpu_and_logs_it(caplog):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with caplog.at_level(logging.INFO, logger="shest.device"):
        device = resolve_device("auto", purpose="Inference")
    assert device.type == "cpu"
    assert "No GPU found: Inference runs on the CPU" in caplog.text


def test_auto_without_mps_permission_stays_off_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto", allow_mps=False).type == "cpu"


def test_auto_with_mps_permission_takes_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto", allow_mps=True).type == "mps"


@pytest.mark.parametrize("command", ["infer", "segment", "run"])
def test_cli_device_choices_come_from_one_place(command):
    from shest.cli.main import build_parser

    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.dest == "command")
    device = next(action for action in subparsers.choices[command]._actions if action.dest == "device")
    assert tuple(device.choices) == DEVICE_CHOICES
