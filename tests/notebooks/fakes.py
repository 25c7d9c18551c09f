"""A fake kit package for builder tests (the fixture ``fakekit`` is in conftest.py)."""

import ast
import textwrap

FAKE = {
    "__init__.py": "from .registry import METHODS, get_method\nfrom . import methods\n",
    "registry.py": """
        METHODS = {}


        def register(name):
            def add(fn):
                METHODS[name] = fn
                return fn
            return add


        def get_method(name):
            return METHODS[name]
    """,
    "loop.py": """
        import math

        SCALE = 2.0


        def scaled(x):
            return x * SCALE + math.floor(0.5)


        if __name__ == "__main__":
            raise SystemExit("must not run in a notebook")
    """,
    "helpers.py": """
        import torch

        from .loop import scaled as _scaled


        def double(x):
            return _scaled(x)


        def ones():
            return torch.ones(2)
    """,
    "methods/__init__.py": "from . import quick  # noqa: F401\n",
    "methods/quick.py": """
        \"\"\"A quick fake method.\"\"\"
        from .. import helpers
        from ..helpers import double
        from ..loop import SCALE as FACTOR
        from ..registry import register


        @register("quick")
        def quick(x, *, budget_s=None):
            from fakekit.loop import scaled
            return double(x) + helpers.ones().sum().item() + FACTOR + scaled(0)
    """,
}


def write_package(root, files=FAKE, name="fakekit"):
    for rel, text in files.items():
        path = root / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root / name


def package_imports(source: str, package="fakekit") -> list[int]:
    """Lines of ``source`` that still import ``package`` (relatively or by name)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.level or node.module.split(".")[0]
                                                 == package):
            found.append(node.lineno)
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == package
                                                  for a in node.names):
            found.append(node.lineno)
    return found
