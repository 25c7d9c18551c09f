"""Signals: a model's outputs, extracted once (eval mode, no gradients) and kept as arrays.

Everything downstream (the metric, the report, the sanity-check attack, the cache) works on
these numpy arrays, never on models:

- :class:`ModelRecord`: one model (forget-set logits, test losses, accuracies, seconds);
- :class:`GroupSignals`: N models of one group stacked (``(N, E, C)`` logits and so on);
- :class:`EvalSignals`: the four groups of an evaluation (``unlearned``, ``retrained``, and
  for the report's bounds ``ceiling``: a second set of retrained models, ``floor``: models
  trained like the original) plus the forget labels, saved to / loaded from one ``.npz``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from local_eval.data.setup import DataSetup, Split

__all__ = [
    "GROUPS",
    "EvalSignals",
    "GroupSignals",
    "ModelRecord",
    "accuracy",
    "example_losses",
    "model_logits",
    "model_record",
]

GROUPS = ("unlearned", "retrained", "ceiling", "floor")

EVAL_BATCH = 1024  # examples per forward pass when extracting signals


@torch.no_grad()
def model_logits(
    model: nn.Module, split: Split, *, device: torch.device | str, batch_size: int = EVAL_BATCH
) -> np.ndarray:
    """Logits float32 ``(n, C)`` of ``model`` on ``split``, in the split's order.

    The model is put in eval mode (and left there).
    """
    model.eval()
    parts = [
        model(split.images[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(split), batch_size)
    ]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(parts).numpy()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose arg-max is the label (``logits`` (n, C), ``labels`` (n,))."""
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def example_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy per example, float64 ``(n,)``, from logits ``(n, C)``."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(labels)), labels]


@dataclass(frozen=True, eq=False)
class ModelRecord:
    """What the evaluator keeps of one trained (or unlearned) model."""

    forget_logits: np.ndarray  # float32 (E, C), forget set in the setup's order
    test_losses: np.ndarray  # float32 (T,), per-example cross-entropy on the test set
    retain_accuracy: float
    test_accuracy: float
    forget_accuracy: float
    seconds: float  # wall time of the training (or unlearning) run

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "forget_logits": np.asarray(self.forget_logits, dtype=np.float32),
            "test_losses": np.asarray(self.test_losses, dtype=np.float32),
            "retain_accuracy": np.float64(self.retain_accuracy),
            "test_accuracy": np.float64(self.test_accuracy),
            "forget_accuracy": np.float64(self.forget_accuracy),
            "seconds": np.float64(self.seconds),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ModelRecord:
        return cls(
            forget_logits=np.asarray(arrays["forget_logits"]),
            test_losses=np.asarray(arrays["test_losses"]),
            retain_accuracy=float(arrays["retain_accuracy"]),
            test_accuracy=float(arrays["test_accuracy"]),
            forget_accuracy=float(arrays["forget_accuracy"]),
            seconds=float(arrays["seconds"]),
        )


def model_record(model: nn.Module, setup: DataSetup, *, device, seconds: float) -> ModelRecord:
    """Extract everything the evaluator keeps of ``model`` (which is left in eval mode)."""
    forget = model_logits(model, setup.forget, device=device)
    test = model_logits(model, setup.test, device=device)
    retain = model_logits(model, setup.retain, device=device)
    return ModelRecord(
        forget_logits=forget,
        test_losses=example_losses(test, setup.test.labels.numpy()).astype(np.float32),
        retain_accuracy=accuracy(retain, setup.retain.labels.numpy()),
        test_accuracy=accuracy(test, setup.test.labels.numpy()),
        forget_accuracy=accuracy(forget, setup.forget.labels.numpy()),
        seconds=seconds,
    )


@dataclass(frozen=True, eq=False)
class GroupSignals:
    """N models of one group; every field's first axis is the model."""

    forget_logits: np.ndarray  # float32 (N, E, C)
    test_losses: np.ndarray  # float32 (N, T)
    retain_accuracy: np.ndarray  # (N,)
    test_accuracy: np.ndarray  # (N,)
    forget_accuracy: np.ndarray  # (N,)
    seconds: np.ndarray  # (N,) training or unlearning wall time
    seeds: np.ndarray  # int64 (N,)

    @classmethod
    def from_records(cls, records: Sequence[ModelRecord], seeds: Sequence[int]) -> GroupSignals:
        arrays = [r.to_arrays() for r in records]
        return cls(
            **{k: np.stack([a[k] for a in arrays]) for k in arrays[0]},
            seeds=np.asarray(seeds, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.seeds)

    def select(self, index: slice | np.ndarray) -> GroupSignals:
        """The models at ``index``, as a group."""
        return GroupSignals(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass(frozen=True, eq=False)
class EvalSignals:
    """Everything needed to score and report an evaluation without any model."""

    targets: np.ndarray  # int64 (E,) forget-set labels, in the logits' order
    example_ids: np.ndarray  # str (E,) forget-set image ids, same order
    unlearned: GroupSignals
    retrained: GroupSignals
    ceiling: GroupSignals
    floor: GroupSignals

    def save(self, path: str | Path) -> None:
        arrays = {"targets": self.targets, "example_ids": self.example_ids.astype(str)}
        for group in GROUPS:
            for f in fields(GroupSignals):
                arrays[f"{group}__{f.name}"] = getattr(getattr(self, group), f.name)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> EvalSignals:
        with np.load(path, allow_pickle=False) as data:
            return cls.from_arrays(data)

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray]) -> EvalSignals:
        try:
            groups = {
                g: GroupSignals(
                    **{f.name: np.asarray(data[f"{g}__{f.name}"]) for f in fields(GroupSignals)}
                )
                for g in GROUPS
            }
            return cls(
                targets=np.asarray(data["targets"]),
                example_ids=np.asarray(data["example_ids"]),
                **groups,
            )
        except KeyError as exc:
            raise ValueError(f"not an evaluator signals file: {exc} missing") from None
