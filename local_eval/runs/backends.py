"""Where the evaluator's jobs run: a registry of backends (``--backend``).

A backend runs calls ``fn(setup, **kwargs)`` (``fn`` a top-level function of this package,
``kwargs`` picklable: arch, recipe, seeds, the method, the original's weights) and yields
``(position, result)`` as each call finishes, in any order:

- ``local`` (the default): in this process, or, for calls marked ``parallel``, in a pool of
  ``workers`` spawned processes (one torch thread each on CPU: small models use a core far
  better as separate processes than as threads of one);
- ``ray``: every call a Ray task (``local_eval.runs.ray_backend``; ``pip install -r
  requirements-ray.txt``), so a Ray cluster spreads the models over its machines and GPUs.

Outside this process the data are not sent: each process reloads them from the
:class:`WorkerSpec` (dataset, forget set, seed) once and refuses to go on if their
fingerprint differs from the main process's (the data changed on disk, or a machine of a
cluster holds other files).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from local_eval.data.setup import DataSetup
from local_eval.runs.workers import (
    WorkerSpec,
    call_in_worker,
    resolve_device,
    resolve_threads,
    resolve_workers,
)

__all__ = ["BACKENDS", "LocalBackend", "open_backend"]


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
    from local_eval.runs.ray_backend import RayBackend  # imports ray, an optional extra

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
