"""Validation helpers raising :class:`UsageError`s that say what is wrong and what to do."""

import math
import os
import pickle
from pathlib import Path

import torch

from local_eval.common.errors import UsageError
from local_eval.common.files import safe_torch_load


def check_positive(value, name: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{name} must be a positive number, got {value}")


def check_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder; give a file")
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}")
    return path


def load_state_dict(path, *, what: str = "the original model", data=None) -> dict:
    """The state dict in ``path`` (or in ``data``, a file object read in its place, e.g. a zip
    member named ``path``), loaded weights-only and checked: a dict of finite tensors. Every
    refusal is a :class:`UsageError` naming ``what`` and ``path``."""
    if data is None and Path(path).is_dir():
        raise UsageError(f"{what} {path} is a folder; give its .pth file")
    try:
        state = safe_torch_load(path if data is None else data)
    except pickle.UnpicklingError:
        raise UsageError(
            f"refused to load {what} {path}: it holds Python objects other than "
            "tensors (a pickle that could run code); give a plain state dict saved with "
            "torch.save(model.state_dict(), path)"
        ) from None
    except Exception as e:  # a corrupt or non-checkpoint file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"cannot read {what} {path}: not a file written by torch.save "
            f"({type(e).__name__}: {first})"
        ) from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UsageError(f"{what} {path} is not a state dict (a dict of tensors)")
    bad = non_finite(state)
    if bad:
        raise UsageError(
            f"{what} {path} has NaN/inf values in {', '.join(bad[:3])}"
            f"{' (+more)' if len(bad) > 3 else ''}; give a model with finite weights"
        )
    return state


def non_finite(state: dict) -> list[str]:
    """Names of floating-point tensors of ``state`` holding NaN or inf."""
    return [
        k
        for k, v in state.items()
        if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def state_dict_problems(state, expected) -> list[str]:
    """How ``state`` differs from ``expected`` (state dicts): missing keys, unexpected keys,
    shapes, each with at most three names; empty when they fit."""
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", extra), ("shapes", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    return problems


def check_state_dict_fits(
    state: dict, model: torch.nn.Module, arch: str, path, *, what: str = "the original model"
) -> None:
    """Clear error when ``state`` (``what`` ``path``) does not match ``model`` (missing or
    extra keys, shapes)."""
    problems = state_dict_problems(state, model.state_dict())
    if problems:
        raise UsageError(
            f"{what} {path} does not fit --arch {arch}: " + "; ".join(problems)
        )
