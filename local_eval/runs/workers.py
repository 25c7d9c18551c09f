"""What every backend's processes share: the device and process counts, and the data each
worker process reloads from a :class:`WorkerSpec` (checked against the main process's
fingerprint)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from local_eval.data.setup import DataSetup, load_setup
from submission.devices import cuda_problem

__all__ = [
    "WorkerSpec",
    "call_in_worker",
    "parse_device",
    "prepared_setup",
    "resolve_device",
    "resolve_threads",
    "resolve_workers",
]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; otherwise checked as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = parse_device(name)
    problem = cuda_problem(device)
    if problem:
        raise ValueError(f"device {name!r} asked for, but {problem} (try --device auto or cpu)")
    return device


def parse_device(name: str) -> torch.device:
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (try auto, cpu, cuda, cuda:1)") from None


def resolve_workers(workers: int | None, device: torch.device, threads: int | None = None) -> int:
    """Training processes: as given; else 1 on a GPU and, on a CPU, as many as the cores hold
    at the threads each will use (:func:`resolve_threads`' choice: ``threads``, else
    ``$OMP_NUM_THREADS``, else 1), at most 4.

    Small models use a core far better as one single-threaded process each than as threads
    of one process: on a busy machine two-threaded runs stall for seconds at a time waiting
    for a core (on digits, short runs spiked many times over). More threads than cores is
    worse still: with ``OMP_NUM_THREADS=2`` on 2 cores, two workers of two threads (the
    choice before) made the digits main job several times slower than one worker of two
    threads (the choice now) or two of one thread: the automatic choice never oversubscribes
    the cores. A worker costs a few seconds to start, paid only when models
    are missing from the cache.
    """
    if workers is not None:
        return workers
    if device.type != "cpu":
        return 1
    per_worker = threads if threads is not None else _env_threads() or 1
    return max(1, min(4, (os.cpu_count() or 1) // per_worker))


def resolve_threads(threads: int | None, workers: int) -> int:
    """Torch threads per process on CPU: as given; else ``$OMP_NUM_THREADS`` when set; else
    cores // workers (1 with the default workers)."""
    if threads is not None:
        return threads
    return _env_threads() or max(1, (os.cpu_count() or 1) // workers)


def _env_threads() -> int | None:
    """``$OMP_NUM_THREADS`` when it is a positive whole number, else None."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else None


@dataclass(frozen=True)
class WorkerSpec:
    """What a process needs to run jobs: the data, by name and fingerprint, and its threads."""

    dataset: str
    forget: str
    seed: int
    fingerprint: str
    threads: int

    @classmethod
    def of(cls, setup: DataSetup, threads: int) -> WorkerSpec:
        return cls(setup.dataset, setup.forget_spec, setup.seed, setup.fingerprint, threads)


_PREPARED: dict[WorkerSpec, DataSetup] = {}  # this process's copies of the data


def prepared_setup(spec: WorkerSpec) -> DataSetup:
    """The data of ``spec``, loaded (and the process warmed up) once per process."""
    if spec not in _PREPARED:
        from submission.loop import warm_up

        torch.set_num_threads(spec.threads)
        warm_up()  # torch's one-off lazy imports must not count against a timed run
        setup = load_setup(spec.dataset, forget=spec.forget, seed=spec.seed)
        if setup.fingerprint != spec.fingerprint:
            raise RuntimeError(
                f"a worker read other data for {spec.dataset} than the main process "
                "(fingerprint mismatch): the files changed, or this machine holds other ones"
            )
        _PREPARED[spec] = setup
    return _PREPARED[spec]


def call_in_worker(spec: WorkerSpec, fn: Callable, kwargs: Mapping):
    """The entry point of a call run in another process (a pool worker, a Ray task)."""
    return fn(prepared_setup(spec), **kwargs)
