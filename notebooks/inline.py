"""Inline a module and the package modules it imports into flat, self-contained source.

A Kaggle notebook cannot import our ``submission`` package (no internet, no copy of the
repository), so the builder pastes the source of every package module the entry module needs,
in dependency order, with the package's own import statements rewritten so the flat code binds
the same names:

- ``from submission.loop import TrainLoop``        -> removed (a comment): the loop's source,
  pasted earlier, already defines ``TrainLoop``;
- ``from submission.loop import TrainLoop as TL``   -> ``TL = TrainLoop``;
- ``from submission import helpers`` (a submodule)  -> ``helpers = inlined_module(...)``, a
  namespace holding the names the helpers' source defines;
- relative imports (``from ..loop import x``) are resolved against the package first.

Everything else a module imports must be the standard library, torch, torchvision or numpy
(what a Kaggle image certainly has); anything else fails with :class:`InlineError`, as does
any construct the flat form cannot reproduce: dynamic imports, ``import submission.x`` without
``as``, and two modules binding the same top-level name to different things (they would
overwrite each other in the notebook's single namespace). ``if __name__ == "__main__":``
blocks are dropped, since a notebook runs as ``__main__``.
"""

import ast
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ALLOWED_EXTERNAL", "InlineError", "InlinedModule", "check_name_clashes",
           "defined_names", "inline_closure", "source_names"]

# Third-party packages a notebook may import, besides the standard library.
ALLOWED_EXTERNAL = frozenset({"torch", "torchvision", "numpy"})
NAMESPACE_HELPER = "inlined_module"  # defined by the notebook template
_IGNORED_NAMES = frozenset({"__all__", "__doc__", "annotations"})


class InlineError(ValueError):
    """The entry module (or a module it imports) cannot be inlined; the message says why."""


@dataclass
class InlinedModule:
    """One module's rewritten source, ready to paste into a notebook cell."""

    name: str  # dotted module name, or the file name for a standalone entry file
    path: Path
    source: str  # rewritten source
    sha256: str  # of the original file
    names: dict[str, frozenset] = field(default_factory=dict)  # top-level name -> identities


def inline_closure(entry: Path, *, package: str = "submission",
                   package_dir: Path | None = None, entry_name: str | None = None
                   ) -> list[InlinedModule]:
    """The rewritten sources of ``entry`` and every ``package`` module it needs, dependencies
    first (the order Python would execute them; the entry module last).

    ``package_dir`` is the directory of the package (the one holding its ``__init__.py``);
    ``entry_name`` is the entry's dotted name when it is a module of the package (so relative
    imports resolve), ``None`` for a standalone file such as a user's submission.
    """
    resolver = _Resolver(package, Path(package_dir) if package_dir else None)
    done: dict[str, InlinedModule] = {}
    in_progress: list[str] = []

    def visit(name: str, path: Path, importer: str | None) -> None:
        if name in done or name in in_progress:  # a cycle: Python runs the partial module
            return
        in_progress.append(name)
        tree, text = _parse(path, name)
        tree = _without_main_block(tree)
        _check_dynamic_imports(tree, name)
        plan = _plan_imports(tree, name, path, resolver, is_entry=importer is None and
                             entry_name is None)
        for dep in plan.dependencies:
            visit(dep, resolver.path_of(dep, needed_by=name), name)
        in_progress.pop()
        module = InlinedModule(name=name, path=path, source="",
                               sha256=hashlib.sha256(path.read_bytes()).hexdigest())
        module.source = _rewrite(text, tree, plan, done, resolver)
        module.names = _identities(tree, plan, done)
        done[name] = module

    entry = Path(entry)
    visit(entry_name or entry.name, entry, None)
    return list(done.values())


# ---------------------------------------------------------------------------- resolving


class _Resolver:
    def __init__(self, package: str, package_dir: Path | None):
        self.package = package
        self.package_dir = package_dir

    def is_package_module(self, dotted: str) -> bool:
        return dotted == self.package or dotted.startswith(self.package + ".")

    def find(self, dotted: str) -> Path | None:
        """The file of a package module (``.py`` or a subpackage's ``__init__.py``)."""
        if self.package_dir is None:
            return None
        parts = dotted.split(".")[1:]
        base = self.package_dir.joinpath(*parts)
        candidates = [base / "__init__.py"]
        if parts:
            candidates.insert(0, base.with_suffix(".py"))
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        return None

    def path_of(self, dotted: str, *, needed_by: str) -> Path:
        path = self.find(dotted)
        if path is None:
            where = self.package_dir or f"(the {self.package!r} package was not found)"
            raise InlineError(f"{needed_by} imports {dotted}, which has no source file in {where}")
        return path


def _parse(path: Path, name: str) -> tuple[ast.Module, str]:
    try:
        text = path.read_text()
    except OSError as err:
        raise InlineError(f"cannot read {path}: {err}") from None
    try:
        return ast.parse(text, filename=str(path)), text
    except SyntaxError as err:
        raise InlineError(f"{name} ({path}) is not valid Python: {err}") from None


def _without_main_block(tree: ast.Module) -> ast.Module:
    """Drop top-level ``if __name__ == "__main__":`` blocks (recording their lines)."""
    keep, dropped = [], []
    for stmt in tree.body:
        if (isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Compare)
                and isinstance(stmt.test.left, ast.Name) and stmt.test.left.id == "__name__"
                and any(isinstance(c, ast.Constant) and c.value == "__main__"
                        for c in stmt.test.comparators)):
            dropped.append(stmt)
        else:
            keep.append(stmt)
    tree.body = keep
    tree.dropped = dropped  # type: ignore[attr-defined]
    return tree


def _check_dynamic_imports(tree: ast.Module, name: str) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in {"import_module", "__import__"}:
                raise InlineError(
                    f"{name} line {node.lineno}: dynamic imports ({called}) cannot be inlined; "
                    "import the module with a plain import statement"
                )


# ---------------------------------------------------------------------------- planning


@dataclass
class _Plan:
    dependencies: list[str] = field(default_factory=list)
    # id(import node) -> replacement lines without indentation ([] = comment the import out);
    # ("namespace", bound name, module) items become inlined_module(...) lines
    rewrites: dict[int, list] = field(default_factory=dict)
    # top-level binding name -> ("name", module, name) | ("module", module) for package imports
    bindings: dict[str, tuple] = field(default_factory=dict)


def _external_ok(dotted: str) -> bool:
    top = dotted.split(".")[0]
    return top in ALLOWED_EXTERNAL or top in sys.stdlib_module_names


def _plan_imports(tree: ast.Module, name: str, path: Path, resolver: _Resolver,
                  *, is_entry: bool) -> _Plan:
    plan = _Plan()
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    local = {id(n) for scope in ast.walk(tree) if isinstance(scope, scopes)
             for n in ast.walk(scope) if n is not scope}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        module_bindings = dict(plan.bindings)
        if isinstance(node, ast.Import):
            _plan_import(node, name, resolver, plan)
        else:
            _plan_import_from(node, name, path, resolver, plan, standalone=is_entry)
        if id(node) in local:
            plan.bindings = module_bindings  # imports inside functions bind local names
    return plan


def _where(name: str, node: ast.AST) -> str:
    return f"{name} line {node.lineno}"


def _plan_import(node: ast.Import, name: str, resolver: _Resolver, plan: _Plan) -> None:
    package_aliases = [a for a in node.names if resolver.is_package_module(a.name)]
    for alias in node.names:
        if resolver.is_package_module(alias.name):
            if alias.asname is None:
                raise InlineError(
                    f"{_where(name, node)}: `import {alias.name}` cannot be inlined (it binds "
                    f"the package name {resolver.package!r}); write "
                    f"`from {alias.name.rpartition('.')[0] or alias.name} import "
                    f"{alias.name.rpartition('.')[2]}` instead"
                )
            _need_module(alias.name, name, node, resolver, plan)
            plan.bindings[alias.asname] = ("module", alias.name)
        else:
            _check_external(alias.name, name, node, resolver)
    if package_aliases:
        if len(package_aliases) != len(node.names):
            raise InlineError(f"{_where(name, node)}: import package modules and other modules "
                              "in separate statements")
        plan.rewrites[id(node)] = [("namespace", a.asname, a.name) for a in package_aliases]


def _check_external(dotted: str, name: str, node: ast.AST, resolver: _Resolver) -> None:
    if _external_ok(dotted):
        return
    top = dotted.split(".")[0]
    hint = (" (the local evaluator is not part of a submission)" if top == "local_eval" else
            "; a notebook may import only the standard library, torch, torchvision and numpy")
    raise InlineError(f"{_where(name, node)}: cannot inline `{top}`{hint}")


def _need_module(dotted: str, name: str, node: ast.AST, resolver: _Resolver, plan: _Plan):
    if resolver.find(dotted) is None:
        raise InlineError(f"{_where(name, node)}: {dotted} has no source file in "
                          f"{resolver.package_dir}")
    if dotted not in plan.dependencies:
        plan.dependencies.append(dotted)


def _absolute(node: ast.ImportFrom, name: str, path: Path, standalone: bool) -> str:
    if node.level == 0:
        return node.module
    if standalone:
        raise InlineError(f"{_where(name, node)}: relative import in a standalone file cannot "
                          "be resolved; import from the package by its full name")
    parts = name.split(".")
    if path.name != "__init__.py":
        parts = parts[:-1]  # a module's package
    if node.level - 1 >= len(parts):
        raise InlineError(f"{_where(name, node)}: relative import beyond the top-level package")
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _plan_import_from(node: ast.ImportFrom, name: str, path: Path, resolver: _Resolver,
                      plan: _Plan, *, standalone: bool) -> None:
    source = _absolute(node, name, path, standalone)
    if not resolver.is_package_module(source):
        if source != "__future__":
            _check_external(source, name, node, resolver)
        return
    lines = []
    for alias in node.names:
        bound = alias.asname or alias.name
        submodule = f"{source}.{alias.name}"
        if alias.name != "*" and resolver.find(submodule) is not None:
            _need_module(submodule, name, node, resolver, plan)
            plan.bindings[bound] = ("module", submodule)
            lines.append(("namespace", bound, submodule))
            continue
        _need_module(source, name, node, resolver, plan)
        if alias.name == "*":
            continue  # the source's names are all defined already
        plan.bindings[bound] = ("name", source, alias.name)
        if bound != alias.name:
            lines.append(f"{bound} = {alias.name}")
    plan.rewrites[id(node)] = lines


# ---------------------------------------------------------------------------- rewriting


def _rewrite(text: str, tree: ast.Module, plan: _Plan, done: dict, resolver: _Resolver) -> str:
    lines = text.splitlines()
    edits = []  # (first line index, last line index, replacement lines)
    for stmt in tree.dropped:  # type: ignore[attr-defined]
        edits.append((stmt.lineno - 1, stmt.end_lineno - 1, None))
    for node in ast.walk(tree):
        if id(node) in plan.rewrites:
            _check_own_lines(node, lines)
            _check_names_exist(node, plan, done, resolver)
            new = [_namespace_line(item, done) if isinstance(item, tuple) else item
                   for item in plan.rewrites[id(node)]]
            edits.append((node.lineno - 1, node.end_lineno - 1, new))
    for first, last, new in sorted(edits, reverse=True):
        if new is None:
            replacement = []  # a dropped __main__ block
        else:
            indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
            original = " ".join(line.strip() for line in lines[first:last + 1])
            comment = f"# inlined: {original}"
            if new:
                replacement = [f"{indent}{new[0]}  {comment}"] + [indent + n for n in new[1:]]
            elif indent:  # inside a block: keep a statement so the block stays valid
                replacement = [f"{indent}pass  {comment}"]
            else:
                replacement = [f"{indent}{comment}"]
        lines[first:last + 1] = replacement
    return "\n".join(lines).rstrip() + "\n"


def _namespace_line(item: tuple, done: dict) -> str:
    _, bound, submodule = item
    if submodule not in done:
        raise InlineError(f"{submodule} is imported as a module inside an import cycle; "
                          "import the names it defines instead")
    names = sorted(done[submodule].names)
    return f"{bound} = {NAMESPACE_HELPER}({submodule!r}, {names!r})"


def _check_own_lines(node: ast.stmt, lines: list[str]) -> None:
    before = lines[node.lineno - 1][: node.col_offset]
    after = lines[node.end_lineno - 1][node.end_col_offset:]
    if before.strip() or (after.strip() and not after.strip().startswith("#")):
        raise InlineError(f"line {node.lineno}: a package import sharing its line with other "
                          "code cannot be inlined; put it on a line of its own")


def _check_names_exist(node: ast.AST, plan: _Plan, done: dict, resolver: _Resolver) -> None:
    if not isinstance(node, ast.ImportFrom):
        return
    for alias in node.names:
        binding = plan.bindings.get(alias.asname or alias.name)
        if binding and binding[0] == "name":
            source = done.get(binding[1])
            if source is not None and binding[2] not in source.names:
                raise InlineError(
                    f"line {node.lineno}: {binding[1]} defines no top-level name "
                    f"{binding[2]!r} (names defined by assignments the inliner cannot see, "
                    "such as globals() updates, cannot be inlined)"
                )


# ---------------------------------------------------------------------------- names


def defined_names(tree: ast.Module) -> dict[str, list[ast.stmt]]:
    """Top-level name -> the statements binding it (compound statements searched, function and
    class bodies not)."""
    found: dict[str, list[ast.stmt]] = {}

    def bind(name: str, stmt: ast.stmt) -> None:
        found.setdefault(name, []).append(stmt)

    def targets(node: ast.AST, stmt: ast.stmt) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                bind(sub.id, stmt)

    def visit(body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bind(stmt.name, stmt)
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                    continue
                for alias in stmt.names:
                    if alias.name != "*":
                        bind(alias.asname or alias.name.split(".")[0], stmt)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for target in getattr(stmt, "targets", None) or [stmt.target]:
                    targets(target, stmt)
            elif isinstance(stmt, (ast.For, ast.AsyncFor, ast.With, ast.AsyncWith)):
                targets(stmt.target if hasattr(stmt, "target") else ast.Module([], []), stmt)
                for item in getattr(stmt, "items", []):
                    if item.optional_vars is not None:
                        targets(item.optional_vars, stmt)
                visit(stmt.body)
                visit(getattr(stmt, "orelse", []))
            elif isinstance(stmt, ast.If | ast.While):
                visit(stmt.body)
                visit(stmt.orelse)
            elif isinstance(stmt, ast.Try):
                visit(stmt.body)
                for handler in stmt.handlers:
                    if handler.name:
                        bind(handler.name, stmt)
                    visit(handler.body)
                visit(stmt.orelse)
                visit(stmt.finalbody)
            elif isinstance(stmt, ast.Expr):
                targets(stmt, stmt)  # walrus at top level
    visit(tree.body)
    return {k: v for k, v in found.items() if k not in _IGNORED_NAMES}


def _identity(stmt: ast.stmt, name: str, plan: _Plan, done: dict) -> frozenset:
    """What a top-level binding refers to, comparable across modules."""
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        binding = plan.bindings.get(name)
        if binding and binding[0] == "name":
            origin = done.get(binding[1])
            if origin is not None and binding[2] in origin.names:
                return origin.names[binding[2]]
            return frozenset({("name", binding[1], binding[2])})
        if binding:
            return frozenset({binding})
        for alias in stmt.names:
            if (alias.asname or alias.name.split(".")[0]) == name:
                target = alias.name if alias.asname or isinstance(stmt, ast.ImportFrom) \
                    else alias.name.split(".")[0]
                prefix = f"{'.' * stmt.level}{stmt.module or ''}." \
                    if isinstance(stmt, ast.ImportFrom) else ""
                return frozenset({("import", prefix + target)})
    # Identical statements (the same constant, the same helper) may be repeated harmlessly.
    return frozenset({("code", ast.dump(stmt))})


def _identities(tree: ast.Module, plan: _Plan, done: dict) -> dict[str, frozenset]:
    return {name: frozenset().union(*(_identity(s, name, plan, done) for s in stmts))
            for name, stmts in defined_names(tree).items()}


def source_names(source: str) -> dict[str, frozenset]:
    """Top-level name -> identities for code outside the package (e.g. template cells)."""
    return _identities(ast.parse(source), _Plan(), {})


def check_name_clashes(modules: list[tuple[str, dict[str, frozenset]]]) -> None:
    """Raise :class:`InlineError` when two modules bind one top-level name to different things.

    ``modules``: (module name, name -> identities) pairs, e.g. from :class:`InlinedModule`.
    """
    owners: dict[str, list[tuple[str, frozenset]]] = {}
    for module, names in modules:
        for name, identity in names.items():
            owners.setdefault(name, []).append((module, identity))
    clashes = []
    for name, defs in sorted(owners.items()):
        if len({identity for _, identity in defs}) > 1:
            clashes.append(f"{name!r} ({', '.join(module for module, _ in defs)})")
    if clashes:
        raise InlineError(
            "inlined modules share one namespace in the notebook, but these top-level names are "
            "bound to different things by different modules: " + "; ".join(clashes)
            + ". Rename them (e.g. make helpers private to one module with a distinct name)"
        )
