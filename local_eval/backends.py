"""Where the evaluator's jobs run: a registry of backends (``--backend``).

A backend runs calls ``fn(setup, **kwargs)`` (``fn`` a top-level function of this package,
``kwargs`` picklable: arch, recipe, seeds, the method, the original's weights) and yields
``(position, result)`` as each call finishes, in any order:

- ``local`` (the default): in this process, or, for calls marked ``parallel``, in a pool of
  ``workers`` spawned processes (one torch thread each on CPU: small models use a core far
  better as separate processes than as threads of one);
- ``ray``: every call a Ray task (``local_eval.ray_backend``; ``pip install -r
  requirements-ray.txt``), so a Ray cluster spreads the models over its machines and GPUs.

Outside this process the data are not sent: each process reloads them from the
:class:`WorkerSpec` (dataset, forget set, seed) once and refuses to go on if their
fingerprint differs from the main process's (the data changed on disk, or a machine of a
cluster holds other files).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

import torch

from submission.devices import cuda_problem

from .data import DataSetup, load_setup

__all__ = [
    "BACKENDS",
    "LocalBackend",
    "WorkerSpec",
    "call_in_worker",
    "open_backend",
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
    for a core (measured on digits: 0.2 s runs spiking to 20 s). More threads than cores is
    worse still: with ``OMP_NUM_THREADS=2`` on 2 cores, two workers of two threads (the
    choice before) took the digits main job (N = 32, empty cache) 171 s, one worker of two
    threads (the choice now) 52 s, two of one thread (no ``OMP_NUM_THREADS``) 53 s: the
    automatic choice never oversubscribes the cores. A worker costs a few seconds to start,
    paid only when models are missing from the cache.
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


class LocalBackend:
    """This process, plus a pool of spawned processes for parallel calls.

    ``device``, ``workers``, ``threads``: the resolved ones (see the ``resolve_*``
    functions); every backend has them, and ``spec``.
    """

    name = "local"

    def __init__(
        self,
        *,
        setup: DataSetup,
        device: str,
        workers: int | None,
        threads: int | None,
        **_options,  # other backends' options
    ):
        self.setup = setup
        self.device = resolve_device(device)
        self.workers = resolve_workers(workers, self.device, threads)
        self.threads = resolve_threads(threads, self.workers)
        self.spec = WorkerSpec.of(setup, self.threads)

    def map(
        self,
        fn: Callable,
        calls: Sequence[Mapping],
        *,
        parallel: bool,
        shared: Mapping | None = None,
    ) -> Iterator[tuple[int, object]]:
        """``fn(setup, **shared, **call)`` for every call, yielding ``(position, result)``.

        ``parallel=False`` keeps the calls here, in order (the submission's runs: their
        seconds compare with each other, and a broken submission fails at its first run).
        """
        shared = dict(shared or {})
        if not parallel or self.workers <= 1 or len(calls) <= 1:
            for i, call in enumerate(calls):
                yield i, fn(self.setup, **shared, **call)
            return
        pool = ProcessPoolExecutor(
            max_workers=min(self.workers, len(calls)),
            mp_context=multiprocessing.get_context("spawn"),  # fork + torch threads can hang
        )
        with pool:
            futures = {
                pool.submit(call_in_worker, self.spec, fn, {**shared, **call}): i
                for i, call in enumerate(calls)
            }
            for future in as_completed(futures):
                yield futures[future], future.result()

    def close(self) -> None:
        pass


def _ray_backend(**kwargs):
    from .ray_backend import RayBackend  # imports ray, an optional extra

    return RayBackend(**kwargs)


BACKENDS: dict[str, Callable] = {"local": LocalBackend, "ray": _ray_backend}


@contextlib.contextmanager
def open_backend(name: str, **kwargs):
    """The backend ``name`` (a key of :data:`BACKENDS`), closed at the end of the block."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    backend = BACKENDS[name](**kwargs)
    try:
        yield backend
    finally:
        backend.close()
