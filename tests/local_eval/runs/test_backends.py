"""The backend registry: devices, workers, threads, the local backend's order, the data
check in other processes, and a clear error when an optional backend is not installed."""

import sys

import pytest
import torch

from local_eval.cli.main import main
from local_eval.data.setup import load_setup
from local_eval.runs import workers
from local_eval.runs.backends import BACKENDS, LocalBackend, open_backend
from local_eval.runs.workers import WorkerSpec, prepared_setup


@pytest.fixture(scope="module")
def digits():
    return load_setup("digits")


def _echo(setup, *, value, offset=0):
    return (setup.dataset, value + offset)


def test_registry_names_the_backends_and_refuses_others(digits):
    assert list(BACKENDS) == ["local", "ray"]
    with pytest.raises(ValueError, match="unknown backend 'slurm'; known: local, ray"):
        with open_backend("slurm", setup=digits, device="cpu", workers=1, threads=1):
            pass


def test_local_backend_runs_calls_here_in_order_with_the_shared_arguments(digits):
    backend = LocalBackend(setup=digits, device="cpu", workers=3, threads=2)
    assert (backend.device, backend.workers, backend.threads) == (torch.device("cpu"), 3, 2)
    assert backend.spec == WorkerSpec("digits", "random:0.1", 0, digits.fingerprint, 2)
    calls = [{"value": v} for v in (5, 7, 9)]
    got = list(backend.map(_echo, calls, parallel=False, shared={"offset": 100}))
    assert got == [(0, ("digits", 105)), (1, ("digits", 107)), (2, ("digits", 109))]


def test_default_workers_and_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 8)
    assert workers.resolve_workers(None, torch.device("cpu")) == 4
    assert workers.resolve_workers(None, torch.device("cuda")) == 1
    assert workers.resolve_threads(None, 4) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert workers.resolve_threads(None, 4) == 3


def test_automatic_workers_never_oversubscribe_the_cores(monkeypatch, digits):
    """Workers x threads stays within the cores when the workers are the kit's choice (two
    workers of two threads on 2 cores made the digits main job 4x slower); an explicit
    --workers is taken as given."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert workers.resolve_workers(None, cpu) == 1
    assert workers.resolve_threads(None, 1) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert workers.resolve_workers(None, cpu) == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert workers.resolve_workers(None, cpu, threads=2) == 1  # --threads 2
    assert workers.resolve_workers(None, cpu, threads=8) == 1  # at least one
    assert workers.resolve_workers(3, cpu, threads=2) == 3  # --workers 3: as given
    monkeypatch.setattr(workers.os, "cpu_count", lambda: 16)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert workers.resolve_workers(None, cpu) == 4  # 8 fit, at most 4
    backend = LocalBackend(setup=digits, device="cpu", workers=None, threads=None)
    assert (backend.workers, backend.threads) == (4, 2)


def test_another_process_refuses_other_data(digits):
    spec = WorkerSpec("digits", "random:0.1", 0, "not-the-fingerprint", 1)
    with pytest.raises(RuntimeError, match="fingerprint mismatch"):
        prepared_setup(spec)
    assert prepared_setup(WorkerSpec.of(digits, 1)).fingerprint == digits.fingerprint


def test_ray_backend_without_ray_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    out = tmp_path / "out"
    argv = ["--backend", "ray", "--n-models", "2", "--quiet", "--no-cache", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "error: --backend ray needs the ray package, which is not installed: "
        "pip install -r requirements-ray.txt"
    )
    assert not out.exists()
