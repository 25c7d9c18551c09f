"""``--backend ray``: every job of an evaluation is a Ray task, so a cluster spreads them.

    pip install -r requirements-ray.txt
    python -m local_eval --backend ray                        # a local Ray instance
    python -m local_eval --backend ray --ray-address auto     # the cluster this node is in

The jobs (``local_eval.runs.jobs``: the original, the submission's runs, the references) run the
same top-level functions with the same seeds as the local backend, so the records are the
same; only the seconds differ. A task takes ``--threads`` CPUs (default 1) or, when the
cluster has GPUs and the device is ``auto``/``cuda``, ``--gpus-per-task`` of a GPU (default
1; Ray sets ``CUDA_VISIBLE_DEVICES``, so a task's ``cuda`` is its own GPU). The submission's
runs go to the cluster too, each in a fresh process of its own, so their seconds are those
of a run on the node that ran it.

What every node needs: this kit and its requirements importable (the same checkout path,
or installed), and the data at the same path (``digits`` and ``mnist5k`` come with the
packages; a ``kaggle:``/``cifar10:`` folder must be on every node, checked by fingerprint).
A ``--submission`` file or notebook is sent by value (cloudpickle); modules it imports from
beside it must be importable on the nodes too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from local_eval.data.setup import DataSetup
from local_eval.runs.loading import USER_MODULE_PREFIX
from local_eval.runs.workers import WorkerSpec, call_in_worker, parse_device

__all__ = ["RayBackend", "task_options"]

INSTALL = "pip install -r requirements-ray.txt"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError(
            f"--backend ray needs the ray package, which is not installed: {INSTALL}"
        ) from None
    return ray


def _run(spec: WorkerSpec, fn: Callable, shared: Mapping, call: Mapping):
    """A task: ``shared`` arrives as one object-store value (the method, the original's
    weights), put there once for all the calls."""
    return call_in_worker(spec, fn, {**shared, **call})


class RayBackend:
    """Ray tasks on a cluster (``ray_address``) or on a local instance started for the run."""

    name = "ray"

    def __init__(
        self,
        *,
        setup: DataSetup,
        device: str,
        workers: int | None,
        threads: int | None,
        ray_address: str | None = None,
        gpus_per_task: float | None = None,
        **_options,
    ):
        ray = self._ray = _import_ray()
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(
                address=ray_address,
                include_dashboard=False,
                log_to_driver=False,  # the tasks' progress bars would interleave with ours
                logging_level=logging.ERROR,
            )
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0.0)
        self.device = _cluster_device(device, gpus)
        self.threads = threads or 1  # small models: a core each beats threads of one
        self.gpus_per_task = (gpus_per_task or 1.0) if self.device.type == "cuda" else 0.0
        slots = (
            gpus / self.gpus_per_task
            if self.gpus_per_task
            else resources.get("CPU", 1.0) / self.threads
        )
        self.workers = workers or max(1, int(slots))  # models in flight: batched group sizes
        self.spec = WorkerSpec.of(setup, self.threads)
        self._task = ray.remote(**task_options(self.threads, self.gpus_per_task))(_run)

    def map(
        self,
        fn: Callable,
        calls: Sequence[Mapping],
        *,
        parallel: bool,  # every call is a task either way
        shared: Mapping | None = None,
    ) -> Iterator[tuple[int, object]]:
        """``fn(setup, **shared, **call)`` for every call as Ray tasks, yielding
        ``(position, result)`` as they finish; the first failure cancels the others."""
        ray = self._ray
        _send_user_code_by_value(ray)
        shared_ref = ray.put(dict(shared or {}))
        pending = {
            self._task.remote(self.spec, fn, shared_ref, call): i for i, call in enumerate(calls)
        }
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), self._get(ref)
        finally:
            for ref in pending:  # after a failure or an interrupt, nobody wants them
                ray.cancel(ref, force=True)

    def _get(self, ref):
        """The task's result; its own exception (a SubmissionError, say) when it raised."""
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()


def task_options(threads: int, gpus_per_task: float) -> dict:
    """Resources of one task. A GPU task gets a fresh worker process (``max_calls=1``): Ray
    picks a task's GPU through ``CUDA_VISIBLE_DEVICES``, which CUDA reads once per process,
    so a reused worker would stay on its first task's GPU and crowd it on a multi-GPU node.
    (Ray applies this default only to a decorated function, not through ``.options``, so
    it is said here.) A CPU task reuses its worker: the data is loaded once per process."""
    options = {"num_cpus": threads, "num_gpus": gpus_per_task}
    if gpus_per_task:
        options["max_calls"] = 1
    return options


def _cluster_device(name: str, gpus: float) -> torch.device:
    """``auto``: ``cuda`` when the cluster has GPUs (this machine need not), else ``cpu``."""
    if name == "auto":
        return torch.device("cuda" if gpus else "cpu")
    device = parse_device(name)
    if device.type == "cuda":
        if not gpus:
            raise ValueError(f"device {name!r} asked for but the Ray cluster has no GPU")
        return torch.device("cuda")  # each task's own GPU (Ray sets CUDA_VISIBLE_DEVICES)
    return device


def _send_user_code_by_value(ray) -> None:
    """A notebook's definitions live in a module registered only in this process; pickling
    its functions by reference would fail on the nodes, so they travel by value."""
    for name, module in list(sys.modules.items()):
        if name.startswith(USER_MODULE_PREFIX):
            ray.cloudpickle.register_pickle_by_value(module)
