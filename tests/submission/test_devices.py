"""Device checks and the timing barrier, with torch.cuda's answers faked (no GPU needed)."""

import pytest
import torch

from local_eval.common.errors import UsageError
from local_eval.runs.workers import resolve_device
from submission import devices
from submission_tools.run.inputs import parse_device


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_cpu_is_always_usable():
    assert devices.cuda_problem(torch.device("cpu")) is None


def test_cuda_without_a_gpu_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.cuda_problem(torch.device("cuda")) == (
        "torch sees no CUDA device on this machine"
    )


def test_a_gpu_index_past_the_last_one_is_refused_by_both_command_lines(one_gpu):
    assert devices.cuda_problem(torch.device("cuda")) is None
    assert devices.cuda_problem(torch.device("cuda:0")) is None
    expected = "this machine has 1 CUDA device(s), numbered 0 to 0; there is no cuda:1"
    assert devices.cuda_problem(torch.device("cuda:1")) == expected
    with pytest.raises(ValueError, match=r"device 'cuda:1' asked for, but this machine has 1"):
        resolve_device("cuda:1")
    with pytest.raises(UsageError, match=r"--device cuda:1 asked for, but this machine has 1"):
        parse_device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_synchronize_waits_on_a_gpu_only(monkeypatch):
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    devices.synchronize("cpu")
    devices.synchronize(torch.device("cpu"))
    assert waited == []
    devices.synchronize("cuda:0")
    assert waited == [torch.device("cuda:0")]
