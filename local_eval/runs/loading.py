"""Where the evaluated ``unlearning`` function comes from: a kit method, a file, a notebook.

- ``method=NAME``: ``submission.get_method(NAME)`` (a key of ``submission.METHODS``);
- ``submission=FILE.py``: the file is imported as a module (so code under
  ``if __name__ == "__main__":`` does not run) and must define ``unlearning``;
- ``notebook=FILE.ipynb``: the *definitions* of the notebook's code cells are executed,
  nothing else (see below), and they must define ``unlearning``;
- none of them: the kit's default, ``submission.unlearning``.

The notebook rule
-----------------
A competition notebook ends in a loop that loads ``original_model.pth`` 512 times and writes
checkpoints; running it here would fail or take hours. So, cell by cell, in order, only these
top-level statements run:

- ``import`` and ``from ... import``;
- ``def``, ``async def`` and ``class`` (with their decorators);
- assignments to plain names whose value is a constant expression (literals, names,
  attributes, subscripts, arithmetic, comparisons, conditional expressions, lambdas: no
  calls), e.g. ``LR = 1e-3`` or ``EPOCHS = 2 * BASE``;
- assignments to ALL-CAPS names with any value, e.g.
  ``DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'``; if evaluating one raises (a
  path that exists only on Kaggle, say), it is skipped and listed in the notes;
- ``try`` blocks made only of the statements above (``try: import x / except ...``).

Everything else is skipped: expression statements (calls, ``print``), ``for``/``while``/
``with``/``if`` blocks (so ``if __name__ == '__main__':`` blocks and checkpoint loops never
run), assignments whose value calls something (``net = resnet18()``,
``state = torch.load(...)``), and IPython magics (``%...``, ``!...``).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.util
import inspect
import json
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from local_eval.common.errors import UsageError
from local_eval.common.timing import time_limit

__all__ = [
    "PER_BUDGET",
    "USER_MODULE_PREFIX",
    "LoadedMethod",
    "check_hyperparameters",
    "load_unlearning",
    "notebook_definitions",
    "parse_hyperparameters",
    "with_time_limit",
]

ENTRY_POINT = "unlearning"
PER_BUDGET = "per budget"  # a run's hard limit: 10 x its budget + 60 s
USER_MODULE_PREFIX = "_user_"  # the modules of a --submission file or notebook's definitions


@dataclass(frozen=True)
class LoadedMethod:
    """The function a run calls, where it came from, and the hyperparameters it is given.

    The one wrapper of an ``unlearning`` function: the evaluator, the checkpoint runner and
    the profiler all call submissions through it.
    """

    fn: Callable
    source: str  # "method:NAME", "file:PATH", "notebook:PATH" or "default:NAME"
    accepts_budget: bool  # whether ``budget_s=`` can be passed
    notes: tuple[str, ...] = field(default=())  # what the notebook rule skipped, say
    overrides: Mapping[str, object] = field(default_factory=dict)  # keyword hyperparameters
    # a call still going after this is a hang, interrupted (RunTimeout): seconds, PER_BUDGET
    # (10 x the call's budget + 60 s; none without one), or None (no limit)
    timeout: float | str | None = None

    def __call__(self, net, retain, forget, val, *, budget_s: float | None = None):
        kwargs = dict(self.overrides)
        if self.accepts_budget:
            kwargs["budget_s"] = budget_s
        limit = self.time_limit_s(budget_s)
        if limit is None:
            return self.fn(net, retain, forget, val, **kwargs)
        message = (  # the pipeline puts which run in front
            f"was still going after {limit:g} s (--run-timeout-s): it looks hung; "
            "make it honour budget_s, or raise --run-timeout-s"
        )
        with time_limit(limit, message):
            return self.fn(net, retain, forget, val, **kwargs)

    def time_limit_s(self, budget_s: float | None) -> float | None:
        """The hard limit of a call given ``budget_s`` (see :attr:`timeout`)."""
        if self.timeout == PER_BUDGET:
            return None if budget_s is None else 10 * budget_s + 60
        return self.timeout

    @property
    def name(self) -> str:
        """A kit method's name; ``file:NAME`` / ``notebook:NAME`` for user code."""
        kind, _, where = self.source.partition(":")
        return f"{kind}:{Path(where).name}" if kind in ("file", "notebook") else where

    def hyperparameters(self) -> dict:
        """Every keyword-only hyperparameter the call uses: its defaults, then the overrides."""
        try:
            params = inspect.signature(self.fn).parameters.values()
        except (TypeError, ValueError):
            params = ()
        defaults = {
            p.name: p.default
            for p in params
            if p.kind is p.KEYWORD_ONLY and p.name != "budget_s" and p.default is not p.empty
        }
        return {**defaults, **self.overrides}

    def describe(self) -> dict:
        """Where it came from and what defines it (JSON-able, for reports and shards)."""
        described = {"source": self.source, "notes": list(self.notes), "identity": self.identity()}
        if self.overrides:  # (absent without overrides: earlier shards' identities hold)
            described["overrides"] = {k: repr(v) for k, v in self.overrides.items()}
        return described

    def identity(self) -> dict:
        """What defines the function wherever its file lies: the kind of source, the method
        or file name, and a sha256 of its code (a kit method: every ``submission`` module,
        its helpers included; a file or a notebook: its bytes; else the function's source).
        Machines that split an evaluation compare it, so they must run the same code."""
        kind, _, where = self.source.partition(":")
        if kind in ("file", "notebook"):
            path = Path(where)
            return {"kind": kind, "name": path.name, "code_sha256": _sha256_files([path])}
        if kind in ("method", "default"):
            import submission

            files = sorted(Path(submission.__file__).parent.rglob("*.py"))
            root = Path(submission.__file__).parent
            return {"kind": kind, "name": where, "code_sha256": _sha256_files(files, root)}
        try:
            code = inspect.getsource(self.fn)
        except (OSError, TypeError):
            code = repr(self.fn)
        digest = hashlib.sha256(code.encode()).hexdigest()
        return {"kind": kind, "name": where, "code_sha256": digest}


def parse_hyperparameters(pairs: Sequence[str]) -> dict:
    """``["lr=0.01", "epochs=2"]`` (``--hp`` options) -> ``{"lr": 0.01, "epochs": 2}``:
    Python literals, else the bare string."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--hp expects NAME=VALUE, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def load_unlearning(
    *,
    method: str | None = None,
    submission: str | Path | None = None,
    notebook: str | Path | None = None,
    hyperparameters: Mapping[str, object] | None = None,
) -> LoadedMethod:
    """The ``unlearning`` function named by at most one of the three sources, to be called
    with ``hyperparameters`` (keyword arguments it must accept; checked here)."""
    given = [
        name
        for name, v in (("method", method), ("submission", submission), ("notebook", notebook))
        if v is not None
    ]
    if len(given) > 1:
        raise ValueError(f"give at most one of --method, --submission, --notebook (got {given})")
    notes: tuple[str, ...] = ()
    if method is not None:
        from submission import get_method

        fn, source = get_method(method), f"method:{method}"
    elif submission is not None:
        fn, source = _from_file(Path(submission)), f"file:{submission}"
    elif notebook is not None:
        namespace, notes = notebook_definitions(Path(notebook))
        fn = _entry_point(namespace, f"notebook {notebook}")
        source = f"notebook:{notebook}"
    else:
        import submission as kit

        fn, source = kit.unlearning, f"default:{kit.DEFAULT_METHOD}"
    overrides = dict(hyperparameters or {})
    check_hyperparameters(fn, overrides, source.partition(":")[2] or source)
    return LoadedMethod(fn, source, _accepts_budget(fn), notes, overrides)


def check_hyperparameters(fn: Callable, overrides: Mapping, name: str) -> None:
    """Refuse ``overrides`` that ``fn`` (called ``name`` in the message) does not take: a
    keyword it lacks, one of its four data arguments, ``budget_s`` (the commands' own
    option), or a value of a type its keyword's annotation (else its default) does not allow.
    Raises :class:`UsageError`."""
    if not overrides:
        return
    try:
        params = inspect.signature(fn, eval_str=True).parameters
    except (TypeError, ValueError, NameError, SyntaxError):  # eval_str: an unresolvable name
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    # net, retain, forget, val: what every run passes, never a hyperparameter
    data = [k for k, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = [k for k in overrides if k in data[:4] or (k not in params and not takes_any)]
    if unknown or "budget_s" in overrides:
        known = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k != "budget_s"]
        raise UsageError(
            f"{name} has no hyperparameter {', '.join(unknown) or 'budget_s (use --budget-s)'}; "
            f"its hyperparameters: {', '.join(known) or '(none)'}"
        )
    for key, value in overrides.items():
        if key in params:
            _check_value_type(params[key], value, name)


UNIONS = (typing.Union, types.UnionType)  # the origins of `int | None` and Optional[int]
# the types a --hp value is checked against; other annotations (a tuple, a callable) are not
SIMPLE_TYPES = (bool, int, float, str, type(None))


def _expected_types(param: inspect.Parameter) -> tuple[type, ...] | None:
    """The simple types ``param`` takes, from its annotation, else from its default's type;
    ``None`` where that says nothing checkable (no annotation and a ``None`` default, or an
    annotation other than bool / int / float / str / None and their unions)."""
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        default = param.default
        if default is inspect.Parameter.empty or default is None:
            return None
        annotation = type(default)
    members = typing.get_args(annotation) if typing.get_origin(annotation) in UNIONS else ()
    types_ = tuple(members) or (annotation,)
    types_ = tuple(type(None) if t is None else t for t in types_)
    if not all(isinstance(t, type) and t in SIMPLE_TYPES for t in types_):
        return None
    return types_


def _fits(value: object, types_: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, not to a rate or a count
        return bool in types_
    if isinstance(value, int) and float in types_:  # lr=1 is a float's value
        return True
    return isinstance(value, types_)


def _check_value_type(param: inspect.Parameter, value: object, name: str) -> None:
    """A ``--hp`` value of a type the method's keyword does not take is an error naming
    both (a value that is not a Python literal arrives as a string: ``lr=abc``)."""
    types_ = _expected_types(param)
    if types_ is None or _fits(value, types_):
        return
    wanted = " or ".join("None" if t is type(None) else t.__name__ for t in types_)
    default = "" if param.default is inspect.Parameter.empty else f", default {param.default!r}"
    raise UsageError(
        f"{name}'s {param.name} takes {wanted}{default}; --hp {param.name}={value!r} is "
        f"{_article(type(value).__name__)}. Give a Python literal of that type (e.g. "
        f"{param.name}={_example(types_)})"
    )


def _article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _example(types_: tuple[type, ...]) -> str:
    for t, example in ((float, "0.001"), (int, "3"), (bool, "True"), (str, "name")):
        if t in types_:
            return example
    return "None"


def _sha256_files(paths: list[Path], root: Path | None = None) -> str:
    """sha256 over the files' names (relative to ``root``) and bytes."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path.relative_to(root) if root else path.name).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def _accepts_budget(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "budget_s" or p.kind is p.VAR_KEYWORD for p in params)


def _check_signature(fn: Callable, where: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(None, None, None, None)
    except TypeError:
        raise ValueError(
            f"{where}: {ENTRY_POINT}{sig} cannot be called as "
            f"{ENTRY_POINT}(net, retain, forget, val)"
        ) from None


def _entry_point(namespace: dict, where: str) -> Callable:
    fn = namespace.get(ENTRY_POINT)
    if fn is None:
        defined = sorted(k for k, v in namespace.items() if callable(v) and not k.startswith("_"))
        shown = ", ".join(defined[:12]) or "nothing callable"
        raise ValueError(f"{where} defines no function '{ENTRY_POINT}' (it defines: {shown})")
    if not callable(fn):
        raise ValueError(f"{where}: '{ENTRY_POINT}' is a {type(fn).__name__}, not a function")
    _check_signature(fn, where)
    return fn


def _from_file(path: Path) -> Callable:
    if not path.is_file():
        raise ValueError(f"submission file not found: {path}")
    if path.suffix != ".py":
        raise ValueError(f"submission file must be a .py file (use --notebook for .ipynb): {path}")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(f"{USER_MODULE_PREFIX}submission_{digest}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))  # so the file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ValueError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from exc
    except Exception as exc:
        raise ValueError(f"importing {path} raised {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.parent.resolve()))
    return _entry_point(vars(module), f"submission file {path}")


# --------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------
def notebook_definitions(path: Path) -> tuple[dict, tuple[str, ...]]:
    """Run the definitions of ``path``'s code cells (the notebook rule, module docstring).

    Returns the resulting namespace and notes on what was skipped.
    """
    if not path.is_file():
        raise ValueError(f"notebook not found: {path}")
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a Jupyter notebook (.ipynb JSON): {exc}") from None
    # a real, registered module: dataclasses, pickling and typing look classes up through
    # sys.modules[cls.__module__]
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module = types.ModuleType(f"{USER_MODULE_PREFIX}notebook_{digest}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    namespace = vars(module)
    notes: list[str] = []
    for number, cell in enumerate(cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        _run_cell_definitions(_strip_magics(source), namespace, f"{path} cell {number}", notes)
    return namespace, tuple(notes)


def _strip_magics(source: str) -> str:
    # IPython magics and shell escapes are not Python; blank them, keeping line numbers
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


def _run_cell_definitions(source: str, namespace: dict, where: str, notes: list[str]) -> None:
    try:
        tree = ast.parse(source, filename=where)
    except SyntaxError as exc:
        raise ValueError(f"{where}, line {exc.lineno}: syntax error: {exc.msg}") from None
    for stmt in tree.body:
        kind = _statement_kind(stmt)
        if kind == "skip":
            continue
        code = compile(ast.Module(body=[stmt], type_ignores=[]), where, "exec")
        try:
            exec(code, namespace)
        except Exception as exc:
            if kind == "caps":  # e.g. a Kaggle-only path: skip it, say so
                notes.append(f"{where}, line {stmt.lineno}: skipped ({type(exc).__name__}: {exc})")
                continue
            raise ValueError(f"{where}, line {stmt.lineno}: {type(exc).__name__}: {exc}") from exc


_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_CONSTANT_NODES = (
    ast.Constant,
    ast.Name,
    ast.Load,
    ast.Attribute,
    ast.Subscript,
    ast.Slice,
    ast.Tuple,
    ast.List,
    ast.Set,
    ast.Dict,
    ast.UnaryOp,
    ast.BinOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.Lambda,
    ast.arguments,
    ast.arg,
    ast.Starred,
    ast.operator,
    ast.unaryop,
    ast.boolop,
    ast.cmpop,
    ast.expr_context,
    ast.JoinedStr,
    ast.FormattedValue,
)


def _statement_kind(stmt: ast.stmt) -> str:
    """ "run" (always), "caps" (an ALL-CAPS assignment: run, skip if it raises) or "skip"."""
    if isinstance(stmt, _DEFINITIONS):
        return "run"
    if isinstance(stmt, ast.Try):
        blocks = [*stmt.body, *stmt.orelse, *stmt.finalbody]
        blocks += [s for handler in stmt.handlers for s in handler.body]
        return (
            "run"
            if all(_statement_kind(s) == "run" or isinstance(s, ast.Pass) for s in blocks)
            else "skip"
        )
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        if not all(_is_plain_name(t) for t in targets):
            return "skip"  # attribute / item assignments change other objects
        if stmt.value is None or _is_constant(stmt.value):
            return "run"
        if all(n.isupper() for t in targets for n in _target_names(t)):
            return "caps"
    return "skip"


def _is_plain_name(target: ast.expr) -> bool:
    if isinstance(target, ast.Name):
        return True
    return isinstance(target, ast.Tuple) and all(isinstance(e, ast.Name) for e in target.elts)


def _target_names(target: ast.expr) -> list[str]:
    return [target.id] if isinstance(target, ast.Name) else [e.id for e in target.elts]


def _is_constant(node: ast.expr) -> bool:
    return all(isinstance(n, _CONSTANT_NODES) for n in ast.walk(node))


def with_time_limit(method: LoadedMethod, limit_s: float | str | None) -> LoadedMethod:
    """``method`` whose every call is interrupted after ``limit_s`` seconds (a hang), or with
    :data:`PER_BUDGET` after 10 x the call's budget + 60 s; ``None``: no limit."""
    if limit_s is not None and limit_s != PER_BUDGET and not limit_s > 0:
        raise ValueError(f"the run time limit must be positive seconds, got {limit_s!r}")
    return dataclasses.replace(method, timeout=limit_s)
