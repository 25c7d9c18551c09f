"""Build a self-contained Kaggle submission notebook (see ``shared/spec/kaggle.md``).

The notebook is: a header saying what was inlined from which version, the settings and GPU
check, the dataset and loop of the organisers' template (``kaggle_template.py``, a percent-format
script), the inlined source of the method and every ``submission`` module it needs
(:mod:`notebooks.inline`), the competition's ``unlearning(net, retain_loader, forget_loader,
val_loader)``, and a last cell that runs everything (or, in mock mode, writes an empty
``submission.zip``).
"""

import ast
import importlib
import importlib.util
import inspect
import subprocess
from pathlib import Path

import nbformat

from local_eval.common.errors import UsageError
from local_eval.runs.loading import check_hyperparameters
from notebooks.inline import (
    NAMESPACE_HELPER,
    InlinedModule,
    InlineError,
    check_name_clashes,
    inline_closure,
    source_names,
)

__all__ = ["BuildError", "build_kaggle_notebook", "write_notebook"]

TEMPLATE = Path(__file__).with_name("kaggle_template.py")
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

NAMESPACE_HELPER_CELL = f'''\
import types


def {NAMESPACE_HELPER}(name, names):
    """Stand-in for a package module imported as a module (``from submission import helpers``):
    a namespace of the names its inlined source defined in this notebook."""
    return types.SimpleNamespace(__name__=name, **{{n: globals()[n] for n in names}})
'''


class BuildError(ValueError):
    """The notebook cannot be built; the message says why (nothing is written)."""


def _default_method(package: str) -> str:
    try:
        return importlib.import_module(package).DEFAULT_METHOD
    except (ImportError, AttributeError):
        raise BuildError(
            f"{package} has no DEFAULT_METHOD: give a method or a submission file"
        ) from None


def build_kaggle_notebook(*, method: str | None = None, submission_file=None,
                          method_kwargs: dict | None = None,
                          package: str = "submission") -> nbformat.NotebookNode:
    """A Kaggle submission notebook for a registered ``method`` of ``package`` (looked up with
    ``package.get_method``) or for a user's ``submission_file`` defining ``unlearning``.

    Neither given: the package's default method (``package.DEFAULT_METHOD``).
    ``method_kwargs`` override the method's keyword defaults (method only). Raises
    :class:`BuildError` when the code cannot be inlined into a self-contained notebook.
    """
    if method is not None and submission_file is not None:
        raise BuildError("give at most one of method and submission_file")
    if method is None and submission_file is None:
        method = _default_method(package)
    if method_kwargs and method is None:
        raise BuildError("method_kwargs apply to a registered method only")
    try:
        if method is not None:
            modules, fn_name, entry = _inline_method(method, package)
            _check_method_kwargs(method, package, method_kwargs or {})
            entry_cell = _method_entry_cell(method, fn_name, entry, method_kwargs or {})
        else:
            modules = _inline_submission_file(Path(submission_file), package)
            entry_cell = None
        template = _template_cells()
        _check_clashes(template, modules, entry_cell)
    except InlineError as err:
        raise BuildError(f"cannot build a self-contained notebook: {err}") from None
    provenance = _provenance(modules, method=method, method_kwargs=method_kwargs)
    cells = [nbformat.v4.new_markdown_cell(_header(provenance)), *template]
    if any(f"{NAMESPACE_HELPER}(" in m.source for m in modules):
        cells.append(nbformat.v4.new_code_cell(NAMESPACE_HELPER_CELL.rstrip()))
    for module in modules:
        cells.append(nbformat.v4.new_code_cell(_module_cell(module, provenance)))
    if entry_cell is not None:
        cells.append(nbformat.v4.new_code_cell(entry_cell))
    cells.append(nbformat.v4.new_code_cell(
        'if MOCK:\n    write_empty_submission(os.path.join(WORK_DIR, "submission.zip"))\n'
        "else:\n    run_all(unlearning)"
    ))
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["unlearning_kit"] = provenance
    nbformat.validate(nb)
    return nb


def write_notebook(nb: nbformat.NotebookNode, out) -> Path:
    """Write ``nb`` to ``out`` (via a temporary file, so a reader never sees half of it)."""
    out = Path(out)
    if out.is_dir():
        raise IsADirectoryError(21, "is a folder; give a file name like NAME.ipynb", str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        nbformat.write(nb, tmp)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


# ---------------------------------------------------------------------------- entry points


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _inline_method(method: str, package: str) -> tuple[list[InlinedModule], str, str]:
    try:
        pkg = importlib.import_module(package)
        get_method = pkg.get_method
    except (ImportError, AttributeError) as err:
        raise BuildError(f"cannot look up methods in {package!r}: {err}") from None
    try:
        fn = get_method(method)
    except (KeyError, ValueError) as err:
        raise BuildError(str(err.args[0] if err.args else err)) from None
    module = inspect.getmodule(fn)
    name = getattr(fn, "__name__", None)
    if module is None or name is None or getattr(module, name, None) is not fn:
        raise BuildError(f"method {method!r} ({fn!r}) is not a function defined at the top level "
                         "of a module, so its source cannot be inlined")
    if module.__name__.split(".")[0] != package:
        raise BuildError(f"method {method!r} is defined in {module.__name__}, outside {package}")
    modules = inline_closure(Path(inspect.getsourcefile(module)), package=package,
                             package_dir=_package_dir(package), entry_name=module.__name__)
    return modules, name, module.__name__


def _inline_submission_file(path: Path, package: str) -> list[InlinedModule]:
    if not path.is_file():
        raise BuildError(f"{path} is not a file")
    modules = inline_closure(path, package=package, package_dir=_package_dir(package))
    if "unlearning" not in modules[-1].names:
        raise BuildError(f"{path} defines no top-level `unlearning(net, retain_loader, "
                         "forget_loader, val_loader)` function")
    return modules


def _check_method_kwargs(method: str, package: str, kwargs: dict) -> None:
    """Refuse overrides the method does not take, or of a type it does not take (a typo
    would otherwise fail on Kaggle): the evaluator's and runner's own check."""
    fn = importlib.import_module(package).get_method(method)
    try:
        check_hyperparameters(fn, kwargs, method)
    except UsageError as err:
        raise BuildError(str(err)) from None


def _method_entry_cell(method: str, fn_name: str, module: str, kwargs: dict) -> str:
    try:
        ast.literal_eval(repr(kwargs))
    except (ValueError, SyntaxError):
        raise BuildError(f"method_kwargs must be plain literals, got {kwargs!r}") from None
    call = fn_name
    lines = [f"# The kit's {method!r} method ({module}.{fn_name}) as the competition's entry."]
    if fn_name == "unlearning":  # the wrapper below rebinds the name
        lines.append("kit_method = unlearning")
        call = "kit_method"
    lines += [
        f"METHOD_KWARGS = {kwargs!r}  # hyperparameter overrides; empty: the kit's defaults",
        "",
        "",
        "def unlearning(net, retain_loader, forget_loader, val_loader, budget_s=None):",
        f'    """Unlearn the forget set from ``net`` in place with {method!r}, within '
        '``budget_s``\n    seconds; leaves ``net`` in eval mode."""',
        f"    {call}(net, retain_loader, forget_loader, val_loader, budget_s=budget_s, "
        "**METHOD_KWARGS)",
        "    net.eval()",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- cells


def _template_cells() -> list:
    """The percent-format template as notebook cells (``# %%`` starts a code cell,
    ``# %% [markdown]`` a markdown cell whose lines lose their ``# ``)."""
    cells, kind, lines = [], None, []

    def flush():
        text = "\n".join(lines).strip("\n")
        if kind == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(
                "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                          for line in text.splitlines())))
        elif kind == "code" and text:
            cells.append(nbformat.v4.new_code_cell(text))

    for line in TEMPLATE.read_text().splitlines():
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        else:
            lines.append(line)
    flush()
    return cells


def _check_clashes(template: list, modules: list[InlinedModule], entry_cell: str | None):
    template_code = "\n".join(c.source for c in template if c.cell_type == "code")
    named = [("the notebook template", source_names(template_code))]
    named += [(m.name, m.names) for m in modules]
    if entry_cell is not None:
        entry_names = source_names(entry_cell)
        entry_names.pop("unlearning", None)  # deliberately the competition's entry point
        named.append(("the method's entry cell", entry_names))
    check_name_clashes(named)


def _module_cell(module: InlinedModule, provenance: dict) -> str:
    info = provenance["inlined"][module.name]
    header = f"# Inlined from {info['path']} (sha256 {info['sha256'][:12]})"
    return header + "\n" + module.source.rstrip()


# ---------------------------------------------------------------------------- provenance


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _provenance(modules: list[InlinedModule], *, method, method_kwargs) -> dict:
    """What was inlined from which files and git version (recorded in the notebook)."""
    repo = Path(__file__).resolve().parent.parent
    commit = _git(["rev-parse", "HEAD"], repo)
    inlined, dirty = {}, False
    for m in modules:
        path = m.path.resolve()
        try:
            shown = str(path.relative_to(repo))
            status = _git(["status", "--porcelain", "--", shown], repo)
            dirty = dirty or bool(status)
        except ValueError:
            shown = m.path.name  # a user's file outside the repository
        inlined[m.name] = {"path": shown, "sha256": m.sha256}
    return {
        "method": method,
        "method_kwargs": method_kwargs or {},
        "git_commit": commit,
        "uncommitted_changes": dirty if commit else None,
        "inlined": inlined,
        "built_by": "python -m notebooks build",
    }


def _header(p: dict) -> str:
    what = f"the kit's `{p['method']}` method" if p["method"] else "a user's submission file"
    if p["git_commit"]:
        version = f"git commit `{p['git_commit'][:12]}`"
        if p["uncommitted_changes"]:
            version += " **with uncommitted changes** (file hashes below are authoritative)"
    else:
        version = "no git version available (file hashes below)"
    rows = "\n".join(f"| `{name}` | `{info['path']}` | `{info['sha256'][:12]}` |"
                     for name, info in p["inlined"].items())
    kwargs = f"\n\nHyperparameter overrides: `{p['method_kwargs']}`." if p["method_kwargs"] else ""
    return (
        "# Machine unlearning: Kaggle submission\n\n"
        f"Self-contained notebook for {what}, built by `python -m notebooks build` from "
        f"{version}. It imports only the standard library, torch, torchvision and numpy; "
        f"this code was inlined, dependencies first:\n\n"
        "| module | file | sha256 |\n|---|---|---|\n" + rows + kwargs + "\n\n"
        "Without the competition data (only `empty.txt`, the public copy) it writes an empty "
        "`submission.zip` and stops. Otherwise it runs `unlearning` on the original model N "
        "times within the time limit, each run granted an equal share of the time left (at "
        "most 90% of the organisers' cut-off, 20% of one retraining as timed here first), "
        "zips the N checkpoints into `submission.zip` and writes `manifest.json` beside it."
    )
