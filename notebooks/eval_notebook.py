"""Build a local-evaluation notebook: ``python -m notebooks build-eval``.

Unlike the Kaggle notebook (:mod:`notebooks.build`), this one runs next to the kit and imports
it: it puts the repository root on ``sys.path`` (``$UNLEARN_KIT_ROOT``, else the first folder
holding ``local_eval/`` and ``submission/`` from the kernel's working directory upwards, where
Jupyter starts it in the notebook's folder, else the root the notebook was built from), runs
the evaluator through ``local_eval``'s Python API (what ``python -m local_eval`` does), and
shows the report: the result table, the figures the report writes and what each one means.

The build-time choices (dataset, method, number of models) are the defaults of the parameters
cell at the top; environment variables override every parameter when the notebook runs (see
:data:`ENV_VARS`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import nbformat

from notebooks.build import KERNELSPEC, BuildError

__all__ = ["ENV_VARS", "KNOWN_DATASETS", "build_eval_notebook"]

REPO_ROOT = Path(__file__).resolve().parent.parent
KNOWN_DATASETS = ("digits", "mnist5k", "kaggle:PATH", "cifar10:PATH")  # as local_eval.data.setup
FIGURES = ("epsilons.png", "hardest.png", "accuracies.png")

# Parameter -> environment variable overriding it when the notebook runs.
ENV_VARS = {
    "DATASET": "UNLEARN_EVAL_DATASET",
    "METHOD": "UNLEARN_EVAL_METHOD",
    "N_MODELS": "UNLEARN_EVAL_N_MODELS",
    "OUT_DIR": "UNLEARN_EVAL_OUT",
    "CACHE_DIR": "UNLEARN_CACHE_DIR",
    "DEVICE": "UNLEARN_EVAL_DEVICE",
    "WORKERS": "UNLEARN_EVAL_WORKERS",
    "PROGRESS": "UNLEARN_EVAL_PROGRESS",
    "KIT_ROOT": "UNLEARN_KIT_ROOT",
}


def build_eval_notebook(*, dataset: str = "digits", method: str | None = None,
                        n_models: int = 32, package: str = "submission") -> nbformat.NotebookNode:
    """A notebook evaluating ``method`` (a key of ``package.METHODS``; ``None``: the kit's
    default ``unlearning``) on ``dataset`` with ``n_models`` models per group.

    Raises :class:`~notebooks.build.BuildError` for an unknown method or dataset or fewer than
    two models (nothing is written)."""
    _check_dataset(dataset)
    if isinstance(n_models, bool) or not isinstance(n_models, int) or n_models < 2:
        raise BuildError(f"n_models must be an integer of at least 2 (the metric compares "
                         f"groups of models), got {n_models!r}")
    if method is not None:
        _check_method(method, package)
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    what = f"the kit's `{method}` method" if method else "the kit's default `unlearning`"
    cells = [
        md(_INTRO.format(what=what, dataset=dataset, n_models=n_models)),
        code(_parameters(dataset, method, n_models)),
        code(_KIT_PATH.replace("@REPO_ROOT@", repr(str(REPO_ROOT)))),
        md(_RUN_MD),
        code(_RUN),
        md(_TABLE_MD),
        code(_TABLE),
        md(_EPSILONS_MD),
        code(_figure("epsilons.png")),
        md(_HARDEST_MD),
        code(_figure("hardest.png")),
        md(_ACCURACIES_MD),
        code(_figure("accuracies.png")),
        md(_SANITY_MD),
        code(_SANITY),
    ]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["unlearning_kit"] = {
        "built_by": "python -m notebooks build-eval",
        "dataset": dataset,
        "method": method,
        "n_models": n_models,
    }
    nbformat.validate(nb)
    return nb


def _check_dataset(dataset: str) -> None:
    """The names ``local_eval.data.setup.load_setup`` accepts (without loading anything)."""
    name, sep, path = str(dataset).partition(":")
    if (name in ("digits", "mnist5k") and not sep) or (name in ("kaggle", "cifar10") and path):
        return
    raise BuildError(f"unknown dataset {dataset!r}; known: {', '.join(KNOWN_DATASETS)}")


def _check_method(method: str, package: str) -> None:
    try:
        methods = importlib.import_module(package).METHODS
    except (ImportError, AttributeError) as err:
        raise BuildError(f"cannot look up methods in {package!r}: {err}") from None
    if method not in methods:
        raise BuildError(f"unknown method {method!r}; known: {', '.join(sorted(methods))}")


# ---------------------------------------------------------------------------- cells

_INTRO = """\
# Local evaluation: {what} on `{dataset}`

Built by `python -m notebooks build-eval`. This notebook runs the kit's evaluator
(`local_eval`, the same code as `python -m local_eval`) next to the kit, not on Kaggle:

1. the data is cut into retain / forget / validation / test sets and the original model is
   trained on retain + forget;
2. the method unlearns the forget set from N fresh copies of the original (N = {n_models} by
   default);
3. 2N reference models are trained on the retain set only (N to score against, N more for the
   *ceiling*) and N models like the original (the *floor*). They are cached, so a second run
   on the same setup trains nothing;
4. the competition's score, the report's files and figures are written to the output folder
   and shown below.

**Parameters** are in the next cell; environment variables override them (handy for running
the notebook unattended, e.g. with `jupyter nbconvert --execute`):
`UNLEARN_EVAL_DATASET`, `UNLEARN_EVAL_METHOD` (a name of `submission.METHODS`; empty: the kit's
default), `UNLEARN_EVAL_N_MODELS`, `UNLEARN_EVAL_OUT` (output folder; empty: `runs/<time>-...`),
`UNLEARN_CACHE_DIR` (model cache; empty: `$UNLEARNING_KIT_CACHE` or `~/.cache/unlearning-kit`),
`UNLEARN_EVAL_DEVICE` (`auto`, `cpu`, `cuda`), `UNLEARN_EVAL_WORKERS` (processes training
reference models; 0: the evaluator's choice), `UNLEARN_EVAL_PROGRESS` (`0`: no progress bars)
and `UNLEARN_KIT_ROOT` (the kit's repository, when the notebook is not inside it).
Relative paths are relative to the kernel's working directory (Jupyter: the notebook's folder).
"""


def _parameters(dataset: str, method: str | None, n_models: int) -> str:
    v = ENV_VARS
    return f"""\
# Parameters (defaults chosen when the notebook was built; environment variables override them).
import os

DATASET = os.environ.get({v["DATASET"]!r}, {dataset!r})  # digits, mnist5k, kaggle:PATH, ...
METHOD = os.environ.get({v["METHOD"]!r}, {method or ""!r}) or None  # None: the kit's default
N_MODELS = int(os.environ.get({v["N_MODELS"]!r}, {str(n_models)!r}))  # models per group
OUT_DIR = os.environ.get({v["OUT_DIR"]!r}, "") or None  # None: runs/<time>-<dataset>-<method>
CACHE_DIR = os.environ.get({v["CACHE_DIR"]!r}, "") or None  # None: local_eval's default cache
DEVICE = os.environ.get({v["DEVICE"]!r}, "auto")  # auto: cuda when available
WORKERS = int(os.environ.get({v["WORKERS"]!r}, "0")) or None  # None: the evaluator's choice
PROGRESS = os.environ.get({v["PROGRESS"]!r}, "1") != "0"  # progress bars while training"""


_KIT_PATH = '''\
# Make the kit importable: $UNLEARN_KIT_ROOT, else the first folder holding local_eval/ and
# submission/ from the working directory (Jupyter: the notebook's folder) upwards, else the
# repository this notebook was built from.
import sys
from pathlib import Path

BUILT_FROM = @REPO_ROOT@


def is_kit_root(path):
    # __main__.py: the repository's tests/ holds test packages named local_eval and submission
    path = Path(path)
    return (path / "local_eval" / "__main__.py").is_file() and (
        path / "submission" / "__init__.py").is_file()


def find_kit_root():
    given = os.environ.get("UNLEARN_KIT_ROOT")
    if given:
        if not is_kit_root(given):
            raise FileNotFoundError(f"UNLEARN_KIT_ROOT={given}: no local_eval/ and submission/")
        return Path(given).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents, Path(BUILT_FROM)):
        if is_kit_root(folder):
            return folder
    raise FileNotFoundError(
        f"the kit (local_eval/ and submission/) is neither above {here} nor at {BUILT_FROM}: "
        "set UNLEARN_KIT_ROOT to the repository's folder"
    )


KIT_ROOT = find_kit_root()
if str(KIT_ROOT) not in sys.path:
    sys.path.insert(0, str(KIT_ROOT))

import local_eval  # noqa: E402

print(f"kit: {KIT_ROOT} (local_eval from {Path(local_eval.__file__).parent})")'''


_RUN_MD = """\
## Run the evaluation

The slow part is training the reference models the first time (the cache keeps them); the
method's own runs are timed as the competition would time them.
"""

_RUN = '''\
import json
import time
import warnings

from IPython.display import Image, Markdown, display

from local_eval.training.cache import ModelCache, default_cache_dir
from local_eval.reporting.outputs import default_out_dir, write_outputs
from local_eval.runs.loading import load_unlearning
from local_eval.runs.pipeline import EvalConfig, run_evaluation

config = EvalConfig(dataset=DATASET, n_models=N_MODELS, device=DEVICE, workers=WORKERS)
method = load_unlearning(method=METHOD)
out = Path(OUT_DIR) if OUT_DIR else default_out_dir(config.dataset, method.source)
cache_root = Path(CACHE_DIR).expanduser() if CACHE_DIR else default_cache_dir()
print(f"evaluating {method.source} on {config.dataset}, N = {config.n_models}; "
      f"cache {cache_root}, output {out}")
for note in method.notes:
    print(f"note: {note}")
start = time.perf_counter()
with warnings.catch_warnings():  # without ipywidgets tqdm falls back to text bars: fine
    warnings.filterwarnings("ignore", message="IProgress not found")
    result = run_evaluation(config, method, cache=ModelCache(cache_root), progress=PROGRESS)
write_outputs(result, out, cache_root)
report = json.loads((out / "report.json").read_text())
stages = ", ".join(f"{k} {v:.1f} s" for k, v in report["stage_seconds"].items())
trained = ", ".join(f"{k} {v}" for k, v in report["models_trained"].items())
print(f"done in {time.perf_counter() - start:.1f} s ({stages}); models trained now (the rest "
      f"came from the cache): {trained}; the text summary is {out / 'summary.txt'}")'''


_TABLE_MD = """\
## The result table

- **final score** = F × (retain accuracy ratio) × (test accuracy ratio): the competition's
  number. The ratios compare the unlearned models' mean accuracies with the retrained ones'.
- **F** (forget quality) is the competition's attack-based measure of how indistinguishable
  the unlearned models are from models retrained without the forget set, averaged over the
  forget examples; the 95% interval shows how much it moves with the choice of examples.
- **ceiling**: F of a second, independent set of N retrained models scored against the first.
  This is what *perfect* unlearning scores here: even exact retraining does **not** reach
  F = 1, because two finite samples of models always look somewhat different to the attack.
  Judge F as a fraction of the ceiling, not of 1.
- **floor**: F of N models trained like the original (other seeds), i.e. doing nothing at all.
  A method that scores near the floor has not unlearned; one below it has made the forget set
  *more* recognisable than doing nothing.
"""

_TABLE = '''\
def num(x, digits=3):
    return "–" if x is None else f"{x:.{digits}f}"


def pct(x):
    return "n/a" if x is None else f"{100 * x:.0f}%"


def acc(group, split):
    a = report["accuracy"][group][split]
    return f"{a['mean']:.3f} ± {a['std']:.3f}"


ceiling_f, floor_f = report["ceiling"]["forget_quality"], report["floor"]["forget_quality"]
rows = [
    ("unlearned (the method)", report["score"], report["forget_quality"]),
    ("retrained (references)", None, None),
    ("ceiling: 2nd retrained set", report["ceiling"]["score"], ceiling_f),
    ("floor: seeded originals, as-is", report["floor"]["score"], floor_f),
]
groups = ("unlearned", "retrained", "ceiling", "floor")
lines = [
    "| group | final score | F | F / ceiling | retain acc | test acc | forget acc |",
    "|---|---|---|---|---|---|---|",
]
for (label, score, quality), group in zip(rows, groups):
    share = None if quality is None or not ceiling_f else quality / ceiling_f
    lines.append(f"| {label} | {num(score)} | {num(quality)} | {pct(share)} | "
                 f"{acc(group, 'retain')} | {acc(group, 'test')} | {acc(group, 'forget')} |")
low, high = report["forget_quality_ci95"]
utility = report["utility"]
lines += [
    "",
    f"**Final score {report['score']:.4f}**; F {report['forget_quality']:.4f} "
    f"(95% CI {low:.3f}–{high:.3f} over the forget examples), "
    f"{pct(report['fraction_of_ceiling'])} of the ceiling {ceiling_f:.4f}; "
    f"floor {floor_f:.4f}. "
    f"Utility ratios: retain {utility['retain_ratio']:.3f}, test {utility['test_ratio']:.3f}. "
    f"N = {report['n_models']} models per group, {report['n_forget_examples']} forget examples.",
]
display(Markdown("\\n".join(lines)))
print(f"final score {report['score']:.4f}  F {report['forget_quality']:.4f}  "
      f"ceiling {ceiling_f:.4f}  floor {floor_f:.4f}  "
      f"CI95 {low:.3f}-{high:.3f}  retain ratio {utility['retain_ratio']:.3f}  "
      f"test ratio {utility['test_ratio']:.3f}")'''


_EPSILONS_MD = """\
## Figure 1: per-example epsilons (`epsilons.png`)

For every forget example the metric attacks the two groups of models (unlearned vs retrained)
through their confidences on that example and turns the attack's error rates into an
epsilon: 0 means the groups are indistinguishable on it. Epsilons fall into buckets; an
example earns the points printed under its bucket (1, 1/2, 1/4, ...), and F is the mean of the
points. Bars past the dashed line earn nothing. How many buckets exist grows with N (the last
ends at ceil(ln(N - 1)), the dashed line), so F from a handful of models is coarse and not
comparable with an F at another N: compare it with the ceiling and floor in the title, which
use the same N.
"""

_HARDEST_MD = """\
## Figure 2: the hardest examples (`hardest.png`)

The confidence distributions of the unlearned (red) and retrained (blue) models on the forget
examples with the highest epsilon: where the attack tells them apart best. Unlearned
confidences far to the right of the retrained ones mean the models still remember the example;
far to the left, that unlearning overshot (the example now looks *less* familiar than to a
model that never saw it), which an attack detects just as well.
"""

_ACCURACIES_MD = """\
## Figure 3: accuracies of every model (`accuracies.png`)

Retain, test and forget accuracy of each model (dots) and each group's mean (bars). The
utility ratios of the final score compare the unlearned and retrained means on retain and
test. On the forget set, retrained models score roughly their test accuracy; unlearned models
far above that still remember the forget set, far below it have been pushed past retraining.
"""

_SANITY_MD = """\
## A sanity check, not the competition metric

The starting kit's simple membership attack: a logistic regression on per-example losses tries
to tell forget from test examples, one model at a time (10-fold cross-validated accuracy,
averaged over each group's models; 0.5 = the forget set looks unseen). It sees the whole
population with one model, so it misses what the competition's per-example, many-model attack
sees: a value near 0.5 here is necessary, not sufficient. **It is not part of the score.**
"""

_SANITY = '''\
sanity = report["sanity_check"]
print("loss-attack accuracy (NOT the competition metric; 0.5 = unseen): "
      f"unlearned {sanity['unlearned']:.3f}, retrained {sanity['retrained']:.3f}, "
      f"original (floor) {sanity['floor']:.3f}")
print(f"written to {out.resolve()}: " + ", ".join(sorted(p.name for p in out.iterdir())))'''


def _figure(name: str) -> str:
    return f'display(Image(filename=str(out / {name!r})))'
