"""The evaluation, top to bottom: data -> original -> unlearning runs -> references -> signals.

:func:`run_evaluation` does what the competition's scorer does, at home:

1. cut the data (``local_eval.data``) and pick the architecture and recipe;
2. train the original model on retain + forget (cached with its weights);
3. run the submission's ``unlearning`` N times, each on a fresh copy of the original, seeded
   with ``submission.seeding.seed_everything``, on fresh shuffling loaders of dict batches;
4. train 2N reference models on the retain set only (the first N are the scoring group, the
   other N a second independent draw for the report's ceiling) and N more models trained
   like the original (the report's floor); all cached (``local_eval.cache``);
5. return every model's signals (:class:`~local_eval.signals.EvalSignals`).

Scoring and reporting are ``local_eval.report``'s job. The unlearning runs come before the
references so that a broken submission fails in seconds, not after the long training.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .batched import DEFAULT_GROUP, TRAINERS, check_batchable, train_new_models_batched
from .cache import ModelCache
from .data import DataSetup, load_setup, make_loader
from .loading import LoadedMethod
from .models import build_model, default_arch
from .signals import EvalSignals, GroupSignals, ModelRecord, model_record
from .train import Recipe, default_recipe, get_recipe, train_new_model

__all__ = [
    "EvalConfig",
    "EvalResult",
    "SubmissionError",
    "model_seed",
    "resolve_device",
    "resolve_threads",
    "resolve_workers",
    "run_evaluation",
    "train_record",
]

# Seed streams: a model's seed is derived from (setup seed, role, index), so the groups never
# share an initialisation or a data order.
ROLE_SEEDS = {"original": 1, "retrained": 2, "unlearning": 3}
LOADER_BATCH = 64  # the competition template's loaders


class SubmissionError(ValueError):
    """The evaluated ``unlearning`` raised, or returned something that cannot be scored."""


@dataclass(frozen=True)
class EvalConfig:
    """What defines an evaluation (besides the submission and the cache)."""

    dataset: str = "digits"
    forget: str | None = None  # None: the dataset's default (local_eval.data)
    arch: str | None = None  # None: models.default_arch for the data
    recipe: str | None = None  # None: train.default_recipe for the arch and data
    recipe_overrides: Mapping[str, object] = field(default_factory=dict)
    n_models: int = 32
    device: str = "auto"
    seed: int = 0
    budget_s: float | None = None  # per unlearning run; None: the method's full recipe
    workers: int | None = None  # processes training models; None: resolve_workers()
    threads: int | None = None  # torch threads per process on CPU; None: resolve_threads()
    trainer: str = "sequential"  # or "batched": local_eval.batched, groups of models per call

    def __post_init__(self):
        if not isinstance(self.n_models, int) or self.n_models < 2:
            raise ValueError(
                f"n_models must be at least 2 (the metric compares groups), got {self.n_models!r}"
            )
        if self.budget_s is not None and not self.budget_s > 0:
            raise ValueError(f"budget_s must be positive seconds, got {self.budget_s!r}")
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer must be one of {TRAINERS}, got {self.trainer!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")


@dataclass(frozen=True, eq=False)
class EvalResult:
    config: EvalConfig
    setup: DataSetup
    arch: str
    recipe: Recipe
    device: str
    method: LoadedMethod
    signals: EvalSignals
    stage_seconds: dict[str, float]  # wall time per stage
    trained: dict[str, int]  # models actually trained per role (the rest came from the cache)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; otherwise checked as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (try auto, cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but no CUDA GPU is available")
    return device


def resolve_workers(workers: int | None, device: torch.device) -> int:
    """Training processes: as given; else 1 on a GPU and one per CPU core (at most 4).

    Small models use a core far better as one single-threaded process each than as threads
    of one process: on a busy machine two-threaded runs stall for seconds at a time waiting
    for a core (measured on digits: 0.2 s runs spiking to 20 s). A worker costs a few
    seconds to start, paid only when models are missing from the cache.
    """
    if workers is not None:
        return workers
    if device.type != "cpu":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def resolve_threads(threads: int | None, workers: int) -> int:
    """Torch threads per process on CPU: as given; else ``$OMP_NUM_THREADS`` when set; else
    cores // workers (1 with the default workers)."""
    if threads is not None:
        return threads
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 1) // workers)


@contextlib.contextmanager
def _cpu_threads(device: torch.device, threads: int):
    """On CPU every model, trained or unlearned, runs with the same number of threads, so
    the seconds of an unlearning run and of a retraining (in a worker) compare fairly."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_evaluation(
    config: EvalConfig, method: LoadedMethod, *, cache: ModelCache, progress: bool = True
) -> EvalResult:
    """Everything up to the signals; see the module docstring.

    With more than one worker, models are trained in spawned processes: a script calling
    this must guard its entry point with ``if __name__ == "__main__":``.
    """
    stages: dict[str, float] = {}
    with _stage(stages, "data"):
        setup = load_setup(config.dataset, forget=config.forget, seed=config.seed)
        arch = config.arch or default_arch(setup.in_channels, setup.image_size)
        recipe_name = config.recipe or default_recipe(arch, config.dataset)
        recipe = get_recipe(recipe_name, **dict(config.recipe_overrides))
        if config.trainer == "batched":
            check_batchable(recipe)  # before the submission's runs, not after
        device = resolve_device(config.device)
    workers = resolve_workers(config.workers, device)
    with _cpu_threads(device, resolve_threads(config.threads, workers)):
        return _evaluate(
            config, setup, arch, recipe, device, workers, method, cache, progress, stages
        )


def _evaluate(config, setup, arch, recipe, device, workers, method, cache, progress, stages):
    from submission.loop import warm_up

    warm_up()  # torch's one-off lazy imports must not count against the first timed run
    models = _ModelSource(setup, arch, recipe, device, cache, progress, workers, config.trainer)
    n = config.n_models
    with _stage(stages, "original"):
        original = models.original_weights()
    with _stage(stages, "unlearning"):
        unlearned = run_unlearning(
            method,
            original,
            setup,
            arch,
            n=n,
            device=device,
            budget_s=config.budget_s,
            progress=progress,
        )
    with _stage(stages, "references"):  # 2N retrained (scoring + ceiling), N originals (floor)
        groups = models.groups({"retrained": 2 * n, "original": n})
    signals = EvalSignals(
        targets=setup.forget.labels.numpy().copy(),
        example_ids=_example_ids(setup),
        unlearned=unlearned,
        retrained=groups["retrained"].select(slice(0, n)),
        ceiling=groups["retrained"].select(slice(n, 2 * n)),
        floor=groups["original"],
    )
    return EvalResult(
        config, setup, arch, recipe, str(device), method, signals, stages, models.trained
    )


@contextlib.contextmanager
def _stage(stages: dict[str, float], name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = time.perf_counter() - start


def _example_ids(setup: DataSetup) -> np.ndarray:
    if "image_id" in setup.forget.columns:
        return np.asarray(setup.forget.column("image_id")).astype(str)
    return np.arange(len(setup.forget)).astype(str)


def model_seed(setup_seed: int, role: str, index: int) -> int:
    """The seed (0 .. 2**31 - 1) of model ``index`` of ``role``'s stream."""
    state = np.random.SeedSequence([setup_seed, ROLE_SEEDS[role], index]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


# --------------------------------------------------------------------------------------
# Trained models (cached)
# --------------------------------------------------------------------------------------
class _ModelSource:
    """Trained models of a setup, from the cache when there, else trained and cached.

    Missing models of a group are trained by ``workers`` processes (one thread each on
    CPU): small models use a core far better as separate processes than as threads of one.
    """

    def __init__(
        self,
        setup,
        arch,
        recipe,
        device,
        cache: ModelCache,
        progress: bool,
        workers: int,
        trainer: str = "sequential",
    ):
        self.setup, self.arch, self.recipe, self.device = setup, arch, recipe, device
        self.cache, self.progress, self.workers = cache, progress, workers
        self.trainer = trainer
        self.trained = {"original": 0, "retrained": 0}
        self._memo: dict[tuple[str, int], ModelRecord] = {}  # works without a cache too

    def key(self, role: str) -> str:
        recipe = {
            k: v for k, v in self.recipe.as_dict().items() if k not in ("name", "description")
        }
        identity = {
            "role": role,  # "original": retain + forget; "retrained": retain only
            "data": self.setup.describe(),
            "arch": self.arch,
            "recipe": recipe,
        }
        if self.trainer != "sequential":  # same recipe, other float rounding: kept apart
            identity["trainer"] = self.trainer  # (sequential keys stay as they were)
        return self.cache.group(identity)

    def seed(self, role: str, index: int) -> int:
        return model_seed(self.setup.seed, role, index)

    def original_weights(self) -> dict:
        """State dict of the original model (the ``original`` group's model 0)."""
        key, seed = self.key("original"), self.seed("original", 0)
        weights = self.cache.load_weights(key, seed)
        if weights is None or self.cache.load(key, seed) is None:
            if self.trainer == "batched":
                [(record, model)] = train_records_batched(
                    self.setup, self.arch, self.recipe, "original", [seed], self.device
                )
            else:
                record, model = train_record(
                    self.setup, self.arch, self.recipe, "original", seed, self.device
                )
            weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.cache.save_weights(key, seed, weights)
            self._keep("original", key, seed, record)
        return weights

    def groups(self, counts: Mapping[str, int]) -> dict[str, GroupSignals]:
        """``counts[role]`` models of each role (seeds 0.. of its stream), training only the
        ones missing from the cache, all in one pool."""
        keys = {role: self.key(role) for role in counts}
        seeds = {role: [self.seed(role, i) for i in range(n)] for role, n in counts.items()}
        records = {
            role: {
                s: self._memo.get((keys[role], s)) or self.cache.load(keys[role], s)
                for s in seeds[role]
            }
            for role in counts
        }
        missing = [(role, s) for role in counts for s, r in records[role].items() if r is None]
        with _progress(len(missing), "training reference models", self.progress) as bar:
            for (role, seed), record in self._train_many(missing):
                records[role][seed] = record
                self._keep(role, keys[role], seed, record)
                bar.update()
        return {
            role: GroupSignals.from_records([records[role][s] for s in seeds[role]], seeds[role])
            for role in counts
        }

    def _keep(self, role: str, key: str, seed: int, record: ModelRecord) -> None:
        self.trained[role] += 1
        self._memo[key, seed] = record
        self.cache.save(key, seed, record)

    def _train_many(self, jobs: list[tuple[str, int]]):
        """Yield ``((role, seed), record)`` as models finish, here or in worker processes."""
        if self.trainer == "batched":
            yield from self._train_batched(jobs)
            return
        if self.workers <= 1 or len(jobs) <= 1:
            for role, seed in jobs:
                args = (self.setup, self.arch, self.recipe, role, seed, self.device)
                yield (role, seed), train_record(*args)[0]
            return
        with self._pool(len(jobs)) as pool:
            futures = {}
            for job in jobs:
                args = (self.arch, self.recipe, *job, str(self.device))
                futures[pool.submit(_worker_train, *args)] = job
            for future in as_completed(futures):
                yield futures[future], future.result()

    def _train_batched(self, jobs: list[tuple[str, int]]):
        """Groups of up to ``DEFAULT_GROUP`` models of one role per vectorised run, the
        groups spread over the workers (at most one group each at a time)."""
        groups = []
        for role in dict.fromkeys(r for r, _ in jobs):
            seeds = [s for r, s in jobs if r == role]
            size = _group_size(len(seeds), self.workers)
            groups += [(role, seeds[i : i + size]) for i in range(0, len(seeds), size)]
        for role, seeds, records in self._run_groups(groups):
            for seed, record in zip(seeds, records, strict=True):
                yield (role, seed), record

    def _run_groups(self, groups: list[tuple[str, list[int]]]):
        if self.workers <= 1 or len(groups) <= 1:
            for role, seeds in groups:
                args = (self.setup, self.arch, self.recipe, role, seeds, self.device)
                yield role, seeds, [r for r, _ in train_records_batched(*args)]
            return
        with self._pool(len(groups)) as pool:
            futures = {}
            for role, seeds in groups:
                args = (self.arch, self.recipe, role, seeds, str(self.device))
                futures[pool.submit(_worker_train_batched, *args)] = (role, seeds)
            for future in as_completed(futures):
                yield (*futures[future], future.result())

    def _pool(self, jobs: int):
        import multiprocessing

        init = (
            self.setup.dataset,
            self.setup.forget_spec,
            self.setup.seed,
            self.setup.fingerprint,
            torch.get_num_threads(),
        )
        return ProcessPoolExecutor(
            max_workers=min(self.workers, jobs),
            mp_context=multiprocessing.get_context("spawn"),  # fork + torch threads can hang
            initializer=_worker_init,
            initargs=init,
        )


def _group_size(n: int, workers: int) -> int:
    """Models per batched run: the workers share the models evenly, at most DEFAULT_GROUP."""
    per_worker = -(-n // max(1, workers))
    return max(1, min(DEFAULT_GROUP, per_worker))


def train_records_batched(
    setup: DataSetup, arch: str, recipe: Recipe, role: str, seeds: list[int], device
) -> list[tuple[ModelRecord, nn.Module]]:
    """:func:`train_record` for several seeds at once (``local_eval.batched``); a record's
    ``seconds`` is the group's wall time / number of models (amortised)."""
    data = setup.train if role == "original" else setup.retain
    results = train_new_models_batched(
        arch, data, setup.val, recipe, num_classes=setup.num_classes, device=device, seeds=seeds
    )
    return [
        (model_record(r.model, setup, device=device, seconds=r.seconds), r.model) for r in results
    ]


def train_record(setup: DataSetup, arch: str, recipe: Recipe, role: str, seed: int, device):
    """Train one model of ``role`` ("original": retain + forget, "retrained": retain) and
    extract its record; returns ``(record, model)``."""
    data = setup.train if role == "original" else setup.retain
    result = train_new_model(
        arch, data, setup.val, recipe, num_classes=setup.num_classes, device=device, seed=seed
    )
    record = model_record(result.model, setup, device=device, seconds=result.seconds)
    return record, result.model


_WORKER_SETUP: DataSetup | None = None  # a worker process's copy of the data


def _worker_init(dataset: str, forget: str, seed: int, fingerprint: str, threads: int) -> None:
    global _WORKER_SETUP
    from submission.loop import warm_up

    torch.set_num_threads(threads)
    warm_up()
    setup = load_setup(dataset, forget=forget, seed=seed)
    if setup.fingerprint != fingerprint:  # the data changed on disk since the main process read it
        raise RuntimeError(f"worker read other data for {dataset} (fingerprint mismatch)")
    _WORKER_SETUP = setup


def _worker_train(arch: str, recipe: Recipe, role: str, seed: int, device: str) -> ModelRecord:
    return train_record(_WORKER_SETUP, arch, recipe, role, seed, device)[0]


def _worker_train_batched(
    arch: str, recipe: Recipe, role: str, seeds: list[int], device: str
) -> list[ModelRecord]:
    pairs = train_records_batched(_WORKER_SETUP, arch, recipe, role, seeds, device)
    return [record for record, _ in pairs]


# --------------------------------------------------------------------------------------
# The submission's runs
# --------------------------------------------------------------------------------------
def run_unlearning(
    method: LoadedMethod,
    original: Mapping,
    setup: DataSetup,
    arch: str,
    *,
    n: int,
    device: torch.device,
    budget_s: float | None,
    progress: bool = True,
) -> GroupSignals:
    """``n`` seeded runs of ``method``, each from a fresh copy of ``original``."""
    from submission.seeding import seed_everything

    records, seeds = [], []
    with _progress(n, "unlearning runs", progress) as bar:
        for i in range(n):
            seed = model_seed(setup.seed, "unlearning", i)
            where = f"unlearning run {i + 1}/{n} (seed {seed})"
            net = _fresh_model(arch, setup, original, device)
            seed_everything(seed)
            loaders = [
                make_loader(s, batch_size=LOADER_BATCH, shuffle=True)
                for s in (setup.retain, setup.forget, setup.val)
            ]
            start = time.perf_counter()
            try:
                out = method(net, *loaders, budget_s=budget_s)
            except Exception as exc:
                raise SubmissionError(f"{where} raised {type(exc).__name__}: {exc}") from exc
            seconds = time.perf_counter() - start
            model = _check_returned(out, net, original, where)
            try:
                record = model_record(model, setup, device=device, seconds=seconds)
            except Exception as exc:
                raise SubmissionError(
                    f"{where}: evaluating the returned model raised {type(exc).__name__}: {exc}"
                ) from exc
            _check_logits(record, setup, where)
            records.append(record)
            seeds.append(seed)
            bar.update()
    return GroupSignals.from_records(records, seeds)


def _fresh_model(arch: str, setup: DataSetup, weights: Mapping, device) -> nn.Module:
    model = build_model(
        arch,
        num_classes=setup.num_classes,
        in_channels=setup.in_channels,
        image_size=setup.image_size,
    )
    model.load_state_dict(weights)
    return model.to(device).eval()


def _check_returned(out, net: nn.Module, original: Mapping, where: str) -> nn.Module:
    """The competition saves ``net.state_dict()`` and loads it into a fresh model, so the
    returned model (or ``net`` when ``None`` comes back) must have the original's weights'
    names and shapes."""
    model = net if out is None else out
    if not isinstance(model, nn.Module):
        raise SubmissionError(f"{where} returned a {type(out).__name__}, not a torch model")
    state = model.state_dict()
    wrong = [k for k, v in original.items() if k not in state or state[k].shape != v.shape]
    extra = [k for k in state if k not in original]
    if wrong or extra:
        first = (wrong or extra)[0]
        got = tuple(state[first].shape) if first in state else "missing"
        want = tuple(original[first].shape) if first in original else "absent"
        raise SubmissionError(
            f"{where} returned a model of another shape: {len(wrong)} weight(s) missing or "
            f"resized, {len(extra)} extra; e.g. {first!r}: {got} (original: {want})"
        )
    return model


def _check_logits(record: ModelRecord, setup: DataSetup, where: str) -> None:
    logits = record.forget_logits
    expected = (len(setup.forget), setup.num_classes)
    if logits.shape != expected:
        raise SubmissionError(
            f"{where}: forget logits of shape {logits.shape}, expected {expected}"
        )
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        raise SubmissionError(
            f"{where}: the model gives NaN/inf logits on {int(bad.sum())} of {len(bad)} "
            "forget examples"
        )
