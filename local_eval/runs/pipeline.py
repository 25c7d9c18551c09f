"""The evaluation, top to bottom: data -> original -> unlearning runs -> references -> signals.

:func:`run_evaluation` does what the competition's scorer does, at home:

1. cut the data (``local_eval.data.setup``) and pick the architecture and recipe;
2. train the original model on retain + forget (cached with its weights);
3. run the submission's ``unlearning`` N times, each on a fresh copy of the original, seeded
   with ``submission.seeding.seed_everything``, on fresh shuffling loaders of dict batches;
4. train 2N reference models on the retain set only (the first N are the scoring group, the
   other N a second independent draw for the report's ceiling) and N more models trained
   like the original (the report's floor); all cached (``local_eval.training.cache``);
5. return every model's signals (:class:`~local_eval.training.signals.EvalSignals`).

Steps 3 and 4 are the 4N jobs of ``local_eval.runs.jobs``. :func:`run_shard` computes the jobs of
one shard of them (:class:`ShardResult`), :func:`combine` assembles shards into an
:class:`EvalResult`; an unsharded evaluation is the one shard ``0/1``, so a sharded one
merged (``local_eval.runs.shards``) is the same computation. Where the jobs run (this process,
worker processes, a Ray cluster) is the backend's business (``local_eval.runs.backends``).

Scoring and reporting are ``local_eval.reporting.report``'s job. The unlearning runs come before the
references so that a broken submission fails in seconds, not after the long training.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from local_eval.common.checks import check_file, check_state_dict_fits, load_state_dict
from local_eval.common.files import sha256_of
from local_eval.data.setup import DataSetup, load_setup
from local_eval.runs.backends import BACKENDS, open_backend
from local_eval.runs.checkpoints import Checkpoints
from local_eval.runs.jobs import ROLES, WHOLE, Job, Shard, assemble, evaluation_jobs, model_seed
from local_eval.runs.loading import LoadedMethod
from local_eval.runs.unlearning import SubmissionError, fresh_model, run_seed, unlearn
from local_eval.runs.workers import resolve_device, resolve_threads, resolve_workers
from local_eval.training.batched import (
    DEFAULT_GROUP,
    TRAINERS,
    check_batchable,
    train_new_models_batched,
)
from local_eval.training.cache import ModelCache, digest_tensors
from local_eval.training.models import build_model, default_arch
from local_eval.training.signals import EvalSignals, ModelRecord, model_record
from local_eval.training.train import (
    CUTOFF,
    Recipe,
    default_recipe,
    get_recipe,
    train_new_model,
)
from submission.loop import warm_up

__all__ = [
    "EvalConfig",
    "EvalResult",
    "ShardResult",
    "SubmissionError",
    "combine",
    "model_seed",
    "original_is_floor_model",
    "original_model",
    "prepare_original",
    "resolve_budget",
    "resolve_device",
    "resolve_threads",
    "resolve_workers",
    "run_evaluation",
    "run_shard",
    "train_record",
]

AUTO_BUDGET = "auto"
# the same rule, with one retraining timed again when the evaluation starts: the machine's
# speed can drift between the day the original was cached and the runs (shared VMs do)
RETIME_BUDGET = "retime"
# Timings of one retraining whose median RETIME_BUDGET takes: on a shared machine one short
# training can run at half speed (0.75 s against 0.39 and 0.41 s for the same training within
# one board, docs/leaderboard.md), and a single timing would then double a repeat's budget.
RETIME_TIMINGS = 3
BUDGET_RULES = (AUTO_BUDGET, RETIME_BUDGET)


@dataclass(frozen=True)
class EvalConfig:
    """What defines an evaluation (besides the submission and the cache), and where it runs."""

    dataset: str = "digits"
    forget: str | None = None  # None: the dataset's default (local_eval.data.setup)
    arch: str | None = None  # None: models.default_arch for the data
    recipe: str | None = None  # None: train.default_recipe for the arch and data
    recipe_overrides: Mapping[str, object] = field(default_factory=dict)
    n_models: int = 32
    device: str = "auto"
    seed: int = 0
    # seconds per unlearning run: AUTO_BUDGET (the competition's rule: CUTOFF x the original's
    # own training, resolve_budget), RETIME_BUDGET (the same, that training timed again now),
    # a number, or None (the method's full recipe)
    budget_s: float | str | None = "auto"
    # one retraining's seconds as timed by RETIME_BUDGET (then the report's yardstick too);
    # None: the original's recorded training
    retraining_s: float | None = None
    workers: int | None = None  # processes training models; None: resolve_workers()
    threads: int | None = None  # torch threads per process on CPU; None: resolve_threads()
    trainer: str = "sequential"  # or "batched" (local_eval.training.batched): groups per call
    backend: str = "local"  # a key of backends.BACKENDS: where the jobs run
    ray_address: str | None = None  # backend "ray": the cluster (None: a local instance)
    gpus_per_task: float | None = None  # backend "ray" on GPUs: share of a GPU per job (1)
    # a state dict the unlearning runs (or the scored checkpoints) start from; None: the
    # original trained by the recipe (cached), or with checkpoints of a competition-layout
    # folder, its original_model.pth
    original: str | None = None

    def __post_init__(self):
        if not isinstance(self.n_models, int) or self.n_models < 2:
            raise ValueError(
                f"n_models must be at least 2 (the metric compares groups), got {self.n_models!r}"
            )
        budget = self.budget_s
        if (
            budget not in BUDGET_RULES
            and budget is not None
            and not (isinstance(budget, (int, float)) and budget > 0)
        ):
            raise ValueError(
                f"budget_s must be positive seconds, {AUTO_BUDGET!r}, {RETIME_BUDGET!r} or "
                f"None, got {budget!r}"
            )
        seconds = self.retraining_s
        if seconds is not None and not (isinstance(seconds, (int, float)) and seconds > 0):
            raise ValueError(f"retraining_s must be positive seconds or None, got {seconds!r}")
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer must be one of {TRAINERS}, got {self.trainer!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {self.backend!r}")
        if self.gpus_per_task is not None and not 0 < self.gpus_per_task <= 1:
            raise ValueError(
                f"gpus_per_task must be in (0, 1] (a share of one GPU), got {self.gpus_per_task!r}"
            )


@dataclass(frozen=True, eq=False)
class EvalResult:
    config: EvalConfig
    data: dict  # DataSetup.describe()
    arch: str
    recipe: Recipe
    device: str
    method: dict  # LoadedMethod.describe(): source, notes, identity
    signals: EvalSignals
    stage_seconds: dict[str, float]  # wall time per stage (summed over shards)
    trained: dict[str, int]  # models actually trained per role (the rest came from the cache)
    shards: int = 1  # how many shards computed it


@dataclass(frozen=True, eq=False)
class ShardResult:
    """The records of one shard's jobs and how they were made (what a shard folder holds)."""

    config: EvalConfig
    shard: Shard
    data: dict  # DataSetup.describe()
    arch: str
    recipe: Recipe
    method: dict  # LoadedMethod.describe()
    device: str
    records: dict[Job, ModelRecord]  # one per job of shard.select(evaluation_jobs(N))
    targets: np.ndarray  # int64 (E,) forget labels
    example_ids: np.ndarray  # str (E,)
    original_sha256: str | None  # of the original's weights; None if the shard needed none
    stage_seconds: dict[str, float]
    trained: dict[str, int]

    def jobs(self) -> list[Job]:
        return self.shard.select(evaluation_jobs(self.config.n_models))

    def identity(self) -> dict:
        """Everything that defines the records, and nothing about where they were computed:
        shards of one evaluation must agree on it (JSON-able)."""
        data = dict(self.data)
        data["dataset"] = data["dataset"].split(":", 1)[0]  # a folder may lie elsewhere on
        # another machine; the data's fingerprint says whether they are the same
        return {
            "data": data,
            "arch": self.arch,
            "recipe": self.recipe.as_dict(),
            "n_models": self.config.n_models,
            "trainer": self.config.trainer,
            "budget_s": self.config.budget_s,
            "method": self.method["identity"],
        }

    def fingerprint(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


def run_evaluation(
    config: EvalConfig,
    method: LoadedMethod | Checkpoints,
    *,
    cache: ModelCache,
    progress: bool = True,
) -> EvalResult:
    """Everything up to the signals; see the module docstring.

    With more than one worker, models are trained in spawned processes: a script calling
    this must guard its entry point with ``if __name__ == "__main__":``.
    """
    return combine([run_shard(config, method, shard=WHOLE, cache=cache, progress=progress)])


def run_shard(
    config: EvalConfig,
    method: LoadedMethod | Checkpoints,
    *,
    shard: Shard,
    cache: ModelCache,
    progress: bool = True,
) -> ShardResult:
    """The records of ``shard``'s jobs (:mod:`local_eval.runs.jobs`), nothing else.

    ``method`` is the submission to run, or :class:`Checkpoints` it already wrote (scored
    as its runs, in their order). An ``"auto"`` budget is resolved first, from the recipe's
    original (:func:`resolve_budget`)."""
    stages: dict[str, float] = {}
    with _opened(config, stages) as (setup, arch, recipe, backend):
        given = given_original(config, method, setup, arch)
        models = _ModelSource(
            setup, arch, recipe, cache, backend, progress, config.trainer,
            original_sha256=None if given is None else given[1],
        )  # fmt: skip
        if isinstance(method, Checkpoints):  # no runs: their budget was the submitter's
            config = dataclasses.replace(config, budget_s=None)
        if config.budget_s in BUDGET_RULES:
            with _stage(stages, "original"):
                config = _auto_budget(config, models)
        jobs = shard.select(evaluation_jobs(config.n_models))
        wanted = {role: [job.index for job in jobs if job.role == role] for role in ROLES}
        original = digest = None
        if given is not None:  # the user's original (the floor's model 0 is still trained)
            original, digest = given[0], digest_tensors(given[0])
        elif wanted["unlearning"] or 0 in wanted["original"]:
            with _stage(stages, "original"):
                original = models.original_weights()
            digest = digest_tensors(original)
        with _stage(stages, "unlearning"):
            if isinstance(method, Checkpoints):
                method.check_manifest(
                    data_fingerprint=setup.fingerprint,
                    original_sha256=None if given is None else given[1],
                )
                unlearned = checkpoint_records(
                    method,
                    setup,
                    arch=arch,
                    original=original,
                    indices=wanted["unlearning"],
                    device=backend.device,
                    progress=progress,
                )
            else:
                unlearned = run_unlearning(
                    method,
                    original,
                    backend,
                    arch=arch,
                    indices=wanted["unlearning"],
                    n=config.n_models,
                    budget_s=config.budget_s,
                    progress=progress,
                )
        with _stage(stages, "references"):  # 2N retrained (scoring + ceiling), N originals
            references = models.records({r: wanted[r] for r in ("retrained", "original")})
        yardstick = Job("original", 0)
        if config.retraining_s is not None and yardstick in references:  # timed again now
            references[yardstick] = dataclasses.replace(
                references[yardstick], seconds=config.retraining_s
            )
    return ShardResult(
        config=config,
        shard=shard,
        data=setup.describe(),
        arch=arch,
        recipe=recipe,
        method=method.describe(),
        device=str(backend.device),
        records={**{Job("unlearning", i): r for i, r in unlearned.items()}, **references},
        targets=setup.forget.labels.numpy().copy(),
        example_ids=_example_ids(setup),
        original_sha256=digest,
        stage_seconds=stages,
        trained=models.trained,
    )


def given_original(
    config: EvalConfig, method, setup: DataSetup, arch: str
) -> tuple[dict, str] | None:
    """``(weights, sha256 of the file)`` of the original the user gave (``config.original``;
    with checkpoints of a competition-layout folder, by default its ``original_model.pth``),
    checked against ``arch``; ``None`` when the recipe's original is used."""
    path = _given_original_path(config, checkpoints=isinstance(method, Checkpoints))
    if path is None:
        return None
    file = check_file(path, "original model")
    weights = load_state_dict(file)
    model = build_model(
        arch,
        num_classes=setup.num_classes,
        in_channels=setup.in_channels,
        image_size=setup.image_size,
    )
    check_state_dict_fits(weights, model, arch, file)
    return weights, sha256_of(file)


def _given_original_path(config: EvalConfig, *, checkpoints: bool) -> str | None:
    if config.original is not None:
        return config.original
    folder_original = competition_original(config.dataset) if checkpoints else None
    return None if folder_original is None else str(folder_original)


def original_is_floor_model(result: EvalResult) -> bool:
    """Whether the runs started from the floor's model 0, the recipe's original (no original
    was given): then the floor's records hold the runs' own original."""
    checkpoints = result.method.get("identity", {}).get("kind") == "checkpoints"
    return _given_original_path(result.config, checkpoints=checkpoints) is None


def competition_original(dataset: str) -> Path | None:
    """A competition-layout folder's ``original_model.pth``, when ``dataset`` is one."""
    kind, _, where = str(dataset).partition(":")
    if kind != "kaggle":
        return None
    path = Path(where) / "original_model.pth"
    return path if path.is_file() else None


def resolve_budget(config: EvalConfig, *, cache: ModelCache, progress: bool = True) -> EvalConfig:
    """``config`` with an ``"auto"`` budget replaced by the competition's rule: ``CUTOFF``
    (20%) of one retraining, as measured on the original's own training (the recipe's
    original, trained now or read from ``cache``; with ``--original`` too, whose training
    seconds are not known). ``"retime"``: the same, with that training done again now and
    timed (the weights discarded), its seconds kept as ``retraining_s``. Other configs come
    back as they are. Shards that share a cache resolve ``"auto"`` alike; the resolved
    number is part of a shard's identity, so a merge refuses shards that resolved it
    differently."""
    if config.budget_s not in BUDGET_RULES:
        return config
    with _opened(config, {}) as (setup, arch, recipe, backend):
        models = _ModelSource(setup, arch, recipe, cache, backend, progress, config.trainer)
        return _auto_budget(config, models)


def _auto_budget(config: EvalConfig, models: _ModelSource) -> EvalConfig:
    """The rule itself, for :func:`resolve_budget` and :func:`run_shard` (which counts the
    original's training among its own)."""
    if config.budget_s == AUTO_BUDGET:
        return dataclasses.replace(config, budget_s=CUTOFF * models.original_seconds())
    if config.budget_s == RETIME_BUDGET:
        seconds = models.retimed_original_seconds()
        return dataclasses.replace(config, budget_s=CUTOFF * seconds, retraining_s=seconds)
    return config


def prepare_original(
    config: EvalConfig, *, cache: ModelCache, progress: bool = True
) -> tuple[str, bool]:
    """Make sure ``cache`` holds the original model of ``config``'s setup (the one every
    shard's unlearning runs start from); returns its weights' sha256 and whether it was
    trained now (else it was found)."""
    with _opened(config, {}) as (setup, arch, recipe, backend):
        models = _ModelSource(setup, arch, recipe, cache, backend, progress, config.trainer)
        return digest_tensors(models.original_weights()), models.trained["original"] > 0


def original_model(
    config: EvalConfig, *, cache: ModelCache, progress: bool = True
) -> tuple[nn.Module, DataSetup, float]:
    """The original model of ``config``'s setup (trained now and cached, or read from
    ``cache``), in eval mode on the config's device, with the data setup it was trained on
    and its training's seconds (one retraining: the auto budget's base)."""
    with _opened(config, {}) as (setup, arch, recipe, backend):
        models = _ModelSource(setup, arch, recipe, cache, backend, progress, config.trainer)
        weights = models.original_weights()
        net = fresh_model(arch, setup, weights, backend.device)
        return net, setup, models.original_seconds()


@contextlib.contextmanager
def _opened(config: EvalConfig, stages: dict[str, float]):
    """The data, architecture and recipe of ``config``, and its backend, open for work."""
    with _stage(stages, "data"):
        setup = load_setup(config.dataset, forget=config.forget, seed=config.seed)
        arch, recipe = _arch_and_recipe(config, setup)
    where = {
        "device": config.device,
        "workers": config.workers,
        "threads": config.threads,
        "ray_address": config.ray_address,
        "gpus_per_task": config.gpus_per_task,
    }
    with (
        open_backend(config.backend, setup=setup, **where) as backend,
        _cpu_threads(backend.device, backend.threads),
    ):
        # one-off lazy imports must not count against a timed run (the device itself is
        # warmed where the calls run: a Ray cluster's GPUs need not be on this machine)
        warm_up()
        yield setup, arch, recipe, backend


def combine(parts: Sequence[ShardResult]) -> EvalResult:
    """One evaluation from shards that together hold every job once (checked, with the
    user's words, by ``local_eval.runs.shards``; here a missing job is a ``KeyError``)."""
    first = parts[0]
    records: dict[Job, ModelRecord] = {}
    stages: dict[str, float] = {}
    trained: dict[str, int] = {}
    for part in parts:
        records.update(part.records)
        for name, seconds in part.stage_seconds.items():
            stages[name] = stages.get(name, 0.0) + seconds
        for role, count in part.trained.items():
            trained[role] = trained.get(role, 0) + count
    signals = assemble(
        records,
        n_models=first.config.n_models,
        seed=first.data["seed"],
        targets=first.targets,
        example_ids=first.example_ids,
    )
    return EvalResult(
        config=first.config,
        data=first.data,
        arch=first.arch,
        recipe=first.recipe,
        device=", ".join(dict.fromkeys(part.device for part in parts)),
        method=first.method,
        signals=signals,
        stage_seconds=stages,
        trained=trained,
        shards=len(parts),
    )


def _arch_and_recipe(config: EvalConfig, setup: DataSetup) -> tuple[str, Recipe]:
    arch = config.arch or default_arch(setup.in_channels, setup.image_size)
    recipe_name = config.recipe or default_recipe(arch, config.dataset)
    recipe = get_recipe(recipe_name, **dict(config.recipe_overrides))
    if config.trainer == "batched":
        check_batchable(recipe)  # before the submission's runs, not after
    return arch, recipe


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


@contextlib.contextmanager
def _stage(stages: dict[str, float], name: str):
    """Adds the block's wall time to ``stages[name]`` (a stage may be entered twice: the
    original is trained for the auto budget, then its weights are read back)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        stages[name] = stages.get(name, 0.0) + time.perf_counter() - start


def _example_ids(setup: DataSetup) -> np.ndarray:
    if "image_id" in setup.forget.columns:
        return np.asarray(setup.forget.column("image_id")).astype(str)
    return np.arange(len(setup.forget)).astype(str)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr)


# --------------------------------------------------------------------------------------
# Trained models (cached)
# --------------------------------------------------------------------------------------
class _ModelSource:
    """Trained models of a setup, from the cache when there, else trained (by the backend)
    and cached.

    The original (the ``original`` group's model 0) is always trained alone by the
    sequential trainer, whatever ``trainer`` says: the unlearning runs start from it, and
    its seconds are "one retraining" (the auto budget's base and the report's yardstick),
    which a batched run of one model would overstate (measured: about twice the seconds
    for ``resnet18_narrow``). ``trainer`` trains every other model.
    """

    def __init__(
        self,
        setup: DataSetup,
        arch: str,
        recipe: Recipe,
        cache: ModelCache,
        backend,
        progress: bool,
        trainer: str = "sequential",
        *,
        original_sha256: str | None = None,
    ):
        self.setup, self.arch, self.recipe = setup, arch, recipe
        self.cache, self.backend, self.progress = cache, backend, progress
        self.trainer = trainer
        self.original_sha256 = original_sha256
        self.trained = {"original": 0, "retrained": 0}
        self._memo: dict[tuple[str, int], ModelRecord] = {}  # works without a cache too
        self._original_weights: dict | None = None

    def trainer_of(self, role: str, index: int) -> str:
        return "sequential" if (role, index) == ("original", 0) else self.trainer

    def key(self, role: str, trainer: str) -> str:
        recipe = {
            k: v for k, v in self.recipe.as_dict().items() if k not in ("name", "description")
        }
        if recipe["best_from_epoch"] == 1:  # the default: keys of such recipes stay as they were
            del recipe["best_from_epoch"]
        identity = {
            "role": role,  # "original": retain + forget; "retrained": retain only
            "data": self.setup.describe(),
            "arch": self.arch,
            "recipe": recipe,
        }
        if self.original_sha256 is not None:  # the user's original: references of their own
            identity["original_sha256"] = self.original_sha256  # (recipe-original keys as were)
        if trainer != "sequential":  # same recipe, other float rounding: kept apart
            identity["trainer"] = trainer  # (sequential keys stay as they were)
        device = torch.device(self.backend.device).type
        if device != "cpu":  # other kernels (TF32 on a GPU), and other seconds: kept apart
            identity["device"] = device  # (CPU keys stay as they were)
        return self.cache.group(identity)

    def seed(self, role: str, index: int) -> int:
        return model_seed(self.setup.seed, role, index)

    def original_weights(self) -> dict:
        """State dict of the original model (the ``original`` group's model 0), read or
        trained once per source (its seconds and its weights are both asked for)."""
        if self._original_weights is not None:
            return self._original_weights
        key, seed = self.key("original", "sequential"), self.seed("original", 0)
        weights = self.cache.load_weights(key, seed)
        if weights is None or self.cache.load(key, seed) is None:
            [((_, _, _), (record, weights))] = self._train_many(
                [("original", "sequential", seed)], weights=True
            )
            self.cache.save_weights(key, seed, weights)
            self._keep("original", key, seed, record)
        self._original_weights = weights
        return weights

    def original_seconds(self) -> float:
        """Seconds the original's training took (it is trained now, or read back)."""
        self.original_weights()  # (trained with its record, or both read back)
        return float(self.records({"original": [0]})[Job("original", 0)].seconds)

    def retimed_original_seconds(self) -> float:
        """Seconds of one retraining on the machine as it runs today: the median of
        :data:`RETIME_TIMINGS` timings of the original's training done again now, one after
        another, as it was done (its recipe and seed, alone, by the sequential trainer; the
        weights discarded). A training done in this call, when the original was missing,
        is one of them."""
        before = self.trained["original"]
        seconds = [self.original_seconds()]  # (trains it when missing)
        if self.trained["original"] == before:  # read back: an earlier day's timing
            seconds.clear()
        job = ("original", "sequential", self.seed("original", 0))
        while len(seconds) < RETIME_TIMINGS:  # one at a time: no timing shares the machine
            [(_, (record, _))] = self._train_many([job])
            seconds.append(float(record.seconds))
        return float(np.median(seconds))

    def records(self, indices: Mapping[str, Sequence[int]]) -> dict[Job, ModelRecord]:
        """The models ``indices[role]`` of each role, training only the ones missing from
        the cache, all in one go."""
        jobs = {  # (role, index) -> (role, trainer, seed)
            (role, i): (role, self.trainer_of(role, i), self.seed(role, i))
            for role, idx in indices.items()
            for i in idx
        }
        keys = {(role, t): self.key(role, t) for role, t, _ in jobs.values()}
        found = {
            job: self._memo.get((keys[job[:2]], job[2])) or self.cache.load(keys[job[:2]], job[2])
            for job in jobs.values()
        }
        first = jobs.get(("original", 0))
        if first is not None and found[first] is None:  # alone: not in a batched group, nor
            self.original_weights()  # beside other workers (its seconds are one retraining)
            found[first] = self._memo[keys[first[:2]], first[2]]
        missing = [job for job, record in found.items() if record is None]
        with _progress(len(missing), "training reference models", self.progress) as bar:
            for job, (record, _) in self._train_many(missing):
                found[job] = record
                self._keep(job[0], keys[job[:2]], job[2], record)
                bar.update()
        return {Job(role, i): found[job] for (role, i), job in jobs.items()}

    def _keep(self, role: str, key: str, seed: int, record: ModelRecord) -> None:
        self.trained[role] += 1
        self._memo[key, seed] = record
        self.cache.save(key, seed, record)

    def _train_many(
        self, jobs: list[tuple[str, str, int]], *, weights: bool = False
    ) -> Iterator[tuple[tuple[str, str, int], tuple[ModelRecord, dict | None]]]:
        """Yield ``((role, trainer, seed), (record, weights or None))`` as models finish:
        one model per call, or with the batched trainer groups of up to ``DEFAULT_GROUP``
        models of one role, spread evenly over the backend's workers."""
        units = []
        for role, trainer in dict.fromkeys((r, t) for r, t, _ in jobs):
            seeds = [s for r, t, s in jobs if (r, t) == (role, trainer)]
            size = 1 if trainer == "sequential" else _group_size(len(seeds), self.workers)
            units += [(role, trainer, seeds[i : i + size]) for i in range(0, len(seeds), size)]
        calls = [
            {
                "arch": self.arch,
                "recipe": self.recipe,
                "role": role,
                "seeds": seeds,
                "device": str(self.backend.device),
                "trainer": trainer,
                "weights": weights,
            }
            for role, trainer, seeds in units
        ]
        for i, results in self.backend.map(train_models, calls, parallel=True):
            role, trainer, seeds = units[i]
            for seed, result in zip(seeds, results, strict=True):
                yield (role, trainer, seed), result

    @property
    def workers(self) -> int:
        return self.backend.workers


def _group_size(n: int, workers: int) -> int:
    """Models per batched run: the workers share the models evenly, at most DEFAULT_GROUP."""
    per_worker = -(-n // max(1, workers))
    return max(1, min(DEFAULT_GROUP, per_worker))


def train_models(
    setup: DataSetup,
    *,
    arch: str,
    recipe: Recipe,
    role: str,
    seeds: Sequence[int],
    device: str,
    trainer: str,
    weights: bool = False,
) -> list[tuple[ModelRecord, dict | None]]:
    """One backend call: train the models ``seeds`` of ``role`` (one after the other, or
    all at once with the batched trainer); ``(record, CPU state dict if weights)`` each."""
    warm_up(device)  # this process's first model must not pay the device's start-up
    if trainer == "batched":
        pairs = train_records_batched(setup, arch, recipe, role, list(seeds), device)
    else:
        pairs = [train_record(setup, arch, recipe, role, s, device) for s in seeds]
    return [
        (record, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        if weights
        else (record, None)
        for record, model in pairs
    ]


def train_records_batched(
    setup: DataSetup, arch: str, recipe: Recipe, role: str, seeds: list[int], device
) -> list[tuple[ModelRecord, nn.Module]]:
    """:func:`train_record` for several seeds at once (``local_eval.training.batched``); a record's
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


# --------------------------------------------------------------------------------------
# The submission's runs
# --------------------------------------------------------------------------------------
def run_unlearning(
    method: LoadedMethod,
    original: Mapping | None,
    backend,
    *,
    arch: str,
    indices: Sequence[int],
    n: int,
    budget_s: float | None,
    progress: bool = True,
) -> dict[int, ModelRecord]:
    """The seeded runs ``indices`` (of ``n``) of ``method``, each from a fresh copy of
    ``original``, by the backend (the local one runs them here, one after the other)."""
    calls = [{"index": i} for i in indices]
    shared = {
        "method": method,
        "original": original,
        "arch": arch,
        "n": n,
        "device": str(backend.device),
        "budget_s": budget_s,
    }
    records = {}
    with _progress(len(calls), "unlearning runs", progress) as bar:
        for i, record in backend.map(unlearning_run, calls, parallel=False, shared=shared):
            records[indices[i]] = record
            bar.update()
    return dict(sorted(records.items()))


def checkpoint_records(
    checkpoints: Checkpoints,
    setup: DataSetup,
    *,
    arch: str,
    original: Mapping,
    indices: Sequence[int],
    device,
    progress: bool = True,
) -> dict[int, ModelRecord]:
    """The records of checkpoints ``indices`` (each checked: ``Checkpoints.state``), as the
    runs they stand for; their seconds are the manifest's, else NaN."""
    records = {}
    with _progress(len(indices), "scoring checkpoints", progress) as bar:
        for index in indices:
            state = checkpoints.state(index, original)
            model = fresh_model(arch, setup, state, device)
            record = model_record(model, setup, device=device, seconds=checkpoints.seconds(index))
            _check_logits(record, setup, f"checkpoint {checkpoints.names[index]}")
            records[index] = record
            bar.update()
    return records


def unlearning_run(
    setup: DataSetup,
    *,
    method: LoadedMethod,
    original: Mapping,
    arch: str,
    index: int,
    n: int,
    device: str,
    budget_s: float | None,
) -> ModelRecord:
    """One backend call: run ``index`` of the submission (``local_eval.runs.unlearning``),
    checked, as a record."""
    warm_up(device)  # the CUDA context and handles must not eat the first run's budget
    seed = run_seed(setup.seed, index)
    where = f"unlearning run {index + 1}/{n} (seed {seed})"
    run = unlearn(
        method,
        setup,
        arch=arch,
        original=original,
        index=index,
        device=device,
        budget_s=budget_s,
        where=where,
    )
    try:
        record = model_record(run.model, setup, device=device, seconds=run.seconds)
    except Exception as exc:
        raise SubmissionError(
            f"{where}: evaluating the returned model raised {type(exc).__name__}: {exc}"
        ) from exc
    _check_logits(record, setup, where)
    return record


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
