"""The function a run calls: a registered method or a user's file, with its hyperparameters."""

import ast
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path

from local_eval.common.checks import check_file
from local_eval.common.errors import UsageError
from submission.registry import UnknownMethodError, get_method


def parse_hparams(pairs: list[str]) -> dict:
    """``["lr=0.01", "epochs=2"]`` -> ``{"lr": 0.01, "epochs": 2}`` (Python literals)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--hp expects NAME=VALUE, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a bare string
    return out


def load_user_submission(path: Path):
    """The ``unlearning`` function defined in a user's Python file."""
    spec = importlib.util.spec_from_file_location(f"user_submission_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UsageError(f"importing {path} failed: {type(e).__name__}: {e}") from None
    fn = getattr(module, "unlearning", None)
    if not callable(fn):
        raise UsageError(f"{path} defines no function named 'unlearning'")
    return fn


@dataclass(frozen=True)
class Method:
    """The function a run calls, with what the manifest records about it."""

    name: str
    fn: object
    hparams: dict  # every keyword-only hyperparameter, defaults filled in
    takes_budget: bool

    def __call__(self, net, retain, forget, val, *, budget_s):
        kwargs = {k: v for k, v in self.hparams.items()}
        if self.takes_budget:
            kwargs["budget_s"] = budget_s
        return self.fn(net, retain, forget, val, **kwargs)


def resolve_method(*, method: str | None, submission: str | None, overrides: dict) -> Method:
    if (method is None) == (submission is None):
        raise UsageError("give exactly one of --method NAME or --submission FILE.py")
    if submission is not None:
        path = check_file(submission, "submission file")
        fn, name = load_user_submission(path), f"file:{path.name}"
    else:
        try:
            fn, name = get_method(method), method
        except UnknownMethodError as e:
            raise UsageError(str(e)) from None
    params = inspect.signature(fn).parameters
    takes_var = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in overrides if k not in params and not takes_var]
    if unknown or "budget_s" in overrides:
        known = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k != "budget_s"]
        raise UsageError(
            f"{name} has no hyperparameter {', '.join(unknown) or 'budget_s (use --budget-s)'}; "
            f"its hyperparameters: {', '.join(known) or '(none)'}"
        )
    defaults = {
        k: p.default
        for k, p in params.items()
        if p.kind is p.KEYWORD_ONLY and k != "budget_s" and p.default is not p.empty
    }
    takes_budget = "budget_s" in params or takes_var
    return Method(name, fn, {**defaults, **overrides}, takes_budget)
