"""The job a command line describes, as one frozen object: what to write, where, how fast."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from local_eval.common.checks import check_positive
from local_eval.common.errors import UsageError
from local_eval.common.files import sha256_of
from local_eval.common.shard_text import split_shard
from local_eval.data.setup import LOADER_BATCH
from local_eval.training.train import CUTOFF

SHARE_OF_BUDGET = 0.9  # per-run share of the even split; the rest pays for saving and loading
# How checkpoint j is seeded (local_eval.runs.unlearning): recorded, so that a folder written
# under another rule (earlier kits: seed + j) is never resumed as if it were this job's.
RUN_SEEDS = "model_seed(seed, 'unlearning', j), loaders seeded alike"


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/K"`` -> ``(i, K)`` with 0 <= i < K; ``None`` -> ``(0, 1)`` (every checkpoint)."""
    if text is None:
        return 0, 1
    try:
        return split_shard(text)
    except ValueError as exc:
        raise UsageError(f"--shard: {exc}") from None


@dataclass(frozen=True)
class RunJob:
    """Everything ``python -m submission.run`` was asked to do (checked by :meth:`check`)."""

    data: str
    original: Path
    out: Path
    method: str | None = None
    submission: Path | None = None
    notebook: Path | None = None
    hp: tuple[str, ...] = ()
    forget: str | None = None
    arch: str | None = None  # None: chosen by the data (see :meth:`with_arch`)
    n: int = 512
    budget_h: float = 8.0
    budget_s: float | None = None
    cutoff: float = CUTOFF  # the share of one retraining a run may take (0: no cap)
    seed: int = 0
    device: str | None = None
    batch_size: int = LOADER_BATCH
    zip: bool = False
    shard: str | None = None  # "i/K", or None for every checkpoint
    debug: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunJob:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in vars(args).items() if k in names}
        values["hp"] = tuple(values.get("hp") or ())
        for key in ("original", "out", "submission", "notebook"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)

    def check(self) -> RunJob:
        """``self``, or a :class:`UsageError` naming the first bad option."""
        if self.n < 1:
            raise UsageError(f"--n must be at least 1, got {self.n}")
        check_positive(self.budget_h, "--budget-h")
        check_positive(self.budget_s, "--budget-s")
        if not 0 <= self.cutoff < 1:
            raise UsageError(
                f"--cutoff is a share of one retraining (0: off, below 1): {self.cutoff}"
            )
        if self.seed < 0:
            raise UsageError(f"--seed must be non-negative, got {self.seed}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.shard_of[1] > 1 and self.zip:
            raise UsageError(
                "--zip needs all N checkpoints in one folder: give it to "
                "'python -m submission.run merge' instead"
            )
        return self

    def with_arch(self, arch: str) -> RunJob:
        """The job with its architecture resolved (the manifest records the real one)."""
        return dataclasses.replace(self, arch=arch)

    @property
    def user_code(self) -> Path | None:
        return self.submission or self.notebook

    @property
    def shard_of(self) -> tuple[int, int]:
        return parse_shard(self.shard)

    @property
    def indices(self) -> list[int]:
        """The checkpoints this job writes: all N, or those of its shard."""
        index, count = self.shard_of
        return [j for j in range(self.n) if j % count == index]

    def per_run_budget(self) -> float:
        """``--budget-s``, or an even share of the job budget (less what saving and loading
        cost)."""
        if self.budget_s is not None:
            return self.budget_s
        return SHARE_OF_BUDGET * self.budget_h * 3600 / len(self.indices)

    def identity(self, method, original_sha: str, fingerprint) -> dict:
        """What must match for a folder's checkpoints to be reused by a resumed job (a shard's
        folder also records its shard; unsharded folders have no such entry)."""
        shard = {} if self.shard is None else {"shard": "{}/{}".format(*self.shard_of)}
        return {
            **shard,
            "method": method.name,
            "hyperparameters": {k: repr(v) for k, v in method.hyperparameters().items()},
            "run_seeds": RUN_SEEDS,
            "seed": self.seed,
            "data": self.data,
            "forget": self.forget,
            "arch": self.arch,
            "original_sha256": original_sha,
            "submission_sha256": sha256_of(self.user_code) if self.user_code else None,
            "data_fingerprint": fingerprint,
        }
