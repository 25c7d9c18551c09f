"""The jobs of an evaluation, as one fixed list, and the shards that split it.

An evaluation at N models per group is 4N independent jobs, each fully defined by its role,
its index and the setup's seed (:func:`model_seed`):

- ``unlearning:j`` (j < N): the submission's run j, from a fresh copy of the original;
- ``retrained:j`` (j < 2N): a model trained on the retain set only; the first N are the
  scoring group, the other N the report's ceiling;
- ``original:j`` (j < N): a model trained like the original (retain + forget); they are the
  report's floor, and ``original:0`` *is* the original the unlearning runs start from.

Job number k of :func:`evaluation_jobs` belongs to shard ``k % K`` of ``K``
(:class:`Shard`), so every shard gets about N/K jobs of every role (the roles cost very
different times) and any K machines can split an evaluation without talking to each other.
:func:`assemble` puts the records of all jobs back into :class:`EvalSignals`, in index order,
whichever shard or process computed them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from local_eval.common.shard_text import split_shard
from local_eval.training.signals import EvalSignals, GroupSignals, ModelRecord

__all__ = ["ROLES", "ROLE_SEEDS", "WHOLE", "Job", "Shard", "assemble", "evaluation_jobs"]

# Seed streams: a model's seed is derived from (setup seed, role, index), so the groups never
# share an initialisation or a data order.
ROLE_SEEDS = {"original": 1, "retrained": 2, "unlearning": 3}
ROLES = ("unlearning", "retrained", "original")  # the order of the job list
_MODELS_PER_N = {"unlearning": 1, "retrained": 2, "original": 1}


def model_seed(setup_seed: int, role: str, index: int) -> int:
    """The seed (0 .. 2**31 - 1) of model ``index`` of ``role``'s stream."""
    state = np.random.SeedSequence([setup_seed, ROLE_SEEDS[role], index]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


@dataclass(frozen=True, order=True)
class Job:
    role: str  # a key of ROLE_SEEDS
    index: int

    def __str__(self) -> str:
        return f"{self.role}:{self.index}"

    @classmethod
    def parse(cls, text: str) -> Job:
        role, _, index = text.partition(":")
        if role not in ROLE_SEEDS or not index.isdigit():
            raise ValueError(f"not a job name: {text!r} (expected e.g. 'retrained:3')")
        return cls(role, int(index))


def evaluation_jobs(n_models: int) -> tuple[Job, ...]:
    """All 4N jobs of an evaluation at ``n_models`` per group, in their fixed order."""
    return tuple(Job(role, j) for role in ROLES for j in range(_MODELS_PER_N[role] * n_models))


@dataclass(frozen=True, order=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count): the jobs numbered index mod count."""

    index: int
    count: int

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"shard {self}: the number of shards must be at least 1")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard {self}: the shard number must be in 0..{self.count - 1} "
                f"(shards are numbered 0 to K-1, e.g. 0/{self.count})"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/K"`` -> ``Shard(i, K)``; a clear ``ValueError`` otherwise."""
        return cls(*split_shard(text))

    def select(self, jobs: Sequence[Job]) -> list[Job]:
        return [job for k, job in enumerate(jobs) if k % self.count == self.index]


WHOLE = Shard(0, 1)  # an unsharded evaluation: every job


def assemble(
    records: Mapping[Job, ModelRecord],
    *,
    n_models: int,
    seed: int,
    targets: np.ndarray,
    example_ids: np.ndarray,
) -> EvalSignals:
    """The four groups of an evaluation from one record per job of
    :func:`evaluation_jobs` (``KeyError`` naming the first missing job)."""

    def group(role: str, indices: range) -> GroupSignals:
        jobs = [Job(role, j) for j in indices]
        missing = [str(job) for job in jobs if job not in records]
        if missing:
            raise KeyError(f"no record for job(s) {', '.join(missing[:5])}")
        seeds = [model_seed(seed, role, j) for j in indices]
        return GroupSignals.from_records([records[job] for job in jobs], seeds)

    n = n_models
    return EvalSignals(
        targets=targets,
        example_ids=example_ids,
        unlearned=group("unlearning", range(n)),
        retrained=group("retrained", range(n)),
        ceiling=group("retrained", range(n, 2 * n)),
        floor=group("original", range(n)),
    )
