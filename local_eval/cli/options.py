"""The evaluation options, declared once, and the steps every evaluating command shares.

Each option of :data:`CONFIG_OPTIONS` is a field of :class:`~local_eval.runs.pipeline.EvalConfig`
(or, for :data:`RECIPE_OPTIONS`, a recipe override) and takes that field's default, so
``python -m local_eval``, ``leaderboard``, ``prepare`` and ``shard`` accept the same options
with the same defaults, and :func:`eval_config` turns any of their command lines into the
config.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from local_eval.common.errors import RunTimeout, UsageError
from local_eval.common.files import check_out_folder, folder_lock
from local_eval.runs.backends import BACKENDS
from local_eval.runs.checkpoints import open_checkpoints
from local_eval.runs.competition import SETTINGS
from local_eval.runs.loading import (
    PER_BUDGET,
    load_unlearning,
    parse_hyperparameters,
    with_time_limit,
)
from local_eval.runs.pipeline import BUDGET_RULES, EvalConfig
from local_eval.training.batched import TRAINERS
from local_eval.training.cache import CACHE_ENV, default_cache_dir

__all__ = [
    "CONFIG_OPTIONS",
    "RECIPE_OPTIONS",
    "USER_ERRORS",
    "build_parser",
    "eval_config",
    "evaluation_inputs",
    "out_lock",
    "reporting_errors",
    "run_timeout",
]

USER_ERRORS = (ValueError, OSError, RunTimeout)  # our own checks' messages, missing files, hangs


@dataclass(frozen=True)
class Option:
    """One command-line option: ``--name`` for the field ``name`` (underscores as dashes)."""

    name: str
    help: str
    type: Callable | None = None
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


CONFIG_DEFAULTS = {
    f.name: f.default
    for f in dataclasses.fields(EvalConfig)
    if f.default is not dataclasses.MISSING
}
DATA_OPTIONS = (
    Option("dataset", "digits, mnist5k, kaggle:PATH or cifar10:PATH"),
    Option(
        "forget",
        "random:FRACTION (default random:0.1), class:K, group:COLUMN[:FRACTION], "
        "given (kaggle: default)",
    ),
    Option("arch", "smallcnn, resnet18 or resnet18_narrow (default: by data)"),
    Option("recipe", "fast_smallcnn, organisers_face or cifar_kit (default: by arch/data)"),
)
RECIPE_OPTIONS = (
    Option("epochs", "override the recipe's epochs", int),
    Option("lr", "override the recipe's (peak) learning rate", float),
    Option("batch_size", "override the recipe's batch size", int),
    Option("weight_decay", "override the recipe's weight decay", float),
)
RUN_OPTIONS = (
    Option("n_models", "models per group (default 32; with --checkpoints: as many as given)", int),
    Option(
        "budget_s",
        "seconds per unlearning run, passed as budget_s to methods that take it: auto (the "
        "default: the competition's rule, 20%% of one retraining as measured on the "
        "original's own training), retime (the same, with that training timed again now, "
        "three times, the median taken; by the leaderboard before each repeat: for a machine "
        "whose speed drifts, at the cost of three more trainings each time), a number, or "
        "none (each method's full recipe)",
        lambda text: budget_value(text),
    ),
    Option("device", "auto (cuda if available), cpu, cuda, cuda:N"),
    Option("seed", "split and model seeds", int),
    Option(
        "workers",
        "processes training reference models (default: 1 on GPU; on CPU as many as the "
        "cores hold at --threads / $OMP_NUM_THREADS / 1 thread each, up to 4)",
        int,
    ),
    Option(
        "threads",
        "torch threads per process on CPU (default: $OMP_NUM_THREADS, else cores // workers)",
        int,
    ),
    Option(
        "trainer",
        "how reference models are trained: one at a time, or in vectorised groups "
        "(local_eval.training.batched; recipes without augmentation only). The original "
        "is trained alone, one at a time, either way: its seconds are one retraining",
        choices=TRAINERS,
    ),
    Option(
        "backend",
        "where the models are trained and the submission runs: local (this process and "
        "--workers processes) or ray (Ray tasks on a cluster or a local instance; "
        "pip install -r requirements-ray.txt)",
        choices=tuple(BACKENDS),
    ),
    Option(
        "ray_address",
        "--backend ray: the cluster to join (e.g. auto, ray://head:10001; default: start a "
        "local instance)",
    ),
    Option(
        "gpus_per_task",
        "--backend ray on GPUs: the share of a GPU each job takes (default 1; 0.25 runs four "
        "small models per GPU)",
        float,
    ),
)
CONFIG_OPTIONS = DATA_OPTIONS + RUN_OPTIONS


def budget_value(text: str) -> float | str | None:
    """``--budget-s``: ``auto``, ``retime``, ``none`` or seconds (checked, with the other
    options, by :class:`EvalConfig`)."""
    word = text.strip().lower()
    if word in BUDGET_RULES:
        return word
    if word == "none":
        return None
    try:
        return float(word)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give auto, retime, none or a number of seconds"
        ) from None


# options a named setting (--setting) fixes: an option given beside it wins over its value
SETTING_FIELDS = tuple(dict.fromkeys(k for setting in SETTINGS.values() for k in setting))
# None on the command line: filled in by eval_config (so it knows what was given)
DEFAULT_LATER = ("n_models", *SETTING_FIELDS)


def _add(group, option: Option) -> None:
    default = CONFIG_DEFAULTS.get(option.name)
    shown = "" if default is None or "default" in option.help else f" (default {default})"
    group.add_argument(
        option.flag,
        dest=option.name,
        type=option.type,
        choices=option.choices,
        default=None if option.name in DEFAULT_LATER else default,
        help=option.help + shown,
    )


def build_parser(
    prog: str, description: str, *, submission: bool = True
) -> argparse.ArgumentParser:
    """A parser with every evaluation option; ``submission`` adds the options choosing the
    submission (a command that evaluates one; ``leaderboard`` chooses methods instead)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    data = p.add_argument_group("data and models")
    data.add_argument(
        "--setting",
        choices=tuple(SETTINGS),
        help="a named setting, which sets the options it fixes unless they are given: "
        + "; ".join(
            f"{name}: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in setting.items())
            for name, setting in SETTINGS.items()
        )
        + " (the competition-shaped setting on 2 CPU cores: local_eval.runs.competition)",
    )
    for option in DATA_OPTIONS + RECIPE_OPTIONS:
        _add(data, option)
    if submission:
        sub = p.add_argument_group("the submission (at most one; default: the kit's unlearning)")
        sub.add_argument("--method", help="a name from submission.METHODS")
        sub.add_argument("--submission", type=Path, help="a .py file defining unlearning()")
        sub.add_argument(
            "--notebook",
            type=Path,
            help="an .ipynb whose code cells define unlearning() (only definitions "
            "run: see local_eval.runs.loading)",
        )
        sub.add_argument(
            "--hp",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="a hyperparameter of the method (a Python literal), repeatable",
        )
        sub.add_argument(
            "--checkpoints",
            type=Path,
            help="score these unlearned checkpoints instead of running a submission: a folder "
            "or zip of unlearned_checkpoint_{j}.pth (python -m submission.run or a Kaggle "
            "notebook wrote them; see local_eval.runs.checkpoints)",
        )
    data.add_argument(
        "--original",
        type=Path,
        help="the original model's state dict, which the runs (or the checkpoints) start "
        "from (default: trained by the recipe and cached; with --checkpoints and "
        "--dataset kaggle:PATH, PATH/original_model.pth when there)",
    )
    run = p.add_argument_group("the run")
    for option in RUN_OPTIONS:
        _add(run, option)
    run.add_argument(
        "--run-timeout-s",
        type=float,
        help="interrupt a run still going after this many seconds (a hang) and fail "
        "(default: 10 x --budget-s + 60, none without a budget)",
    )
    run.add_argument("--out", type=Path, help="output folder (default runs/<time>-...)")
    run.add_argument(
        "--cache-dir",
        type=Path,
        help=f"model cache (default ${CACHE_ENV} or ~/.cache/unlearning-kit)",
    )
    run.add_argument("--no-cache", action="store_true", help="train everything, store nothing")
    run.add_argument("--quiet", action="store_true", help="no progress bars, summary only")
    run.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def eval_config(args: argparse.Namespace, *, n_models: int | None = None) -> EvalConfig:
    """The :class:`EvalConfig` a command line built by :func:`build_parser` describes
    (``n_models``: the count when ``--n-models`` was not given, e.g. the checkpoints')."""
    overrides = {o.name: getattr(args, o.name) for o in RECIPE_OPTIONS}
    values = {o.name: getattr(args, o.name) for o in CONFIG_OPTIONS}
    if values["n_models"] is None:
        values["n_models"] = n_models or CONFIG_DEFAULTS["n_models"]
    preset = SETTINGS[args.setting] if getattr(args, "setting", None) else {}
    for name in SETTING_FIELDS:
        if values[name] is None:
            values[name] = preset.get(name, CONFIG_DEFAULTS[name])
    original = getattr(args, "original", None)
    return EvalConfig(
        **values,
        recipe_overrides={k: v for k, v in overrides.items() if v is not None},
        original=None if original is None else str(original),
    )


def reporting_errors(command: Callable[[], int], *, debug: bool) -> int:
    """``command()``'s exit code; a user's mistake (:data:`USER_ERRORS`) becomes one
    ``error:`` line and exit 2, anything else one line and exit 1; ``debug`` re-raises."""
    try:
        return command()
    except (Exception, RunTimeout) as exc:
        if debug:
            raise
        if isinstance(exc, USER_ERRORS):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def run_timeout(args: argparse.Namespace) -> float | str:
    """``--run-timeout-s``, else :data:`PER_BUDGET` (10 x a run's budget + 60 s; none
    without a budget), resolved when the run is called (an ``auto`` budget is known only
    once the original is trained)."""
    if args.run_timeout_s is not None:
        if not args.run_timeout_s > 0:
            raise ValueError(f"--run-timeout-s must be positive, got {args.run_timeout_s}")
        return args.run_timeout_s
    return PER_BUDGET


def cache_root(args: argparse.Namespace) -> Path | None:
    return None if args.no_cache else (args.cache_dir or default_cache_dir())


def evaluation_inputs(args: argparse.Namespace):
    """``(config, method, cache root)`` of a command line that evaluates a submission
    (evaluate, shard): the method loaded (its notes shown) and given its run time limit, or
    with ``--checkpoints`` the checkpoints to score in its place."""
    if args.checkpoints is not None:
        others = [f"--{k}" for k in ("method", "submission", "notebook", "hp") if getattr(args, k)]
        if others:
            raise UsageError(f"--checkpoints scores what a submission wrote: drop {others[0]}")
        checkpoints = open_checkpoints(args.checkpoints, n_models=args.n_models)
        show_notes(checkpoints.notes, quiet=args.quiet)
        config = eval_config(args, n_models=len(checkpoints.names))
        return config, checkpoints, cache_root(args)
    config = eval_config(args)
    method = load_unlearning(
        method=args.method,
        submission=args.submission,
        notebook=args.notebook,
        hyperparameters=parse_hyperparameters(args.hp),
    )
    show_notes(method.notes, quiet=args.quiet)
    return config, with_time_limit(method, run_timeout(args)), cache_root(args)


def show_notes(notes, *, quiet: bool) -> None:
    """What the evaluator noticed about the method or checkpoints it is given, on stderr."""
    if not quiet:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)


def out_lock(out: Path):
    """Checks that ``out`` can be written (before any work), then the exclusive right to
    write it while the block runs: a ``.NAME.lock`` file beside it, removed at the end."""
    check_out_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    busy = f"another evaluation (pid {{owner}}) is writing to --out {out}; wait for it or " \
        "choose another --out"  # fmt: skip
    return folder_lock(out.parent / f".{out.name}.lock", busy=busy, remove=True)


def show_report(files: list[Path], out: Path) -> None:
    """The summary of a written report, and what was written."""
    print(Path(files[0]).parent.joinpath("summary.txt").read_text(), end="")
    print(f"\nwritten to {out}/: " + ", ".join(Path(f).name for f in files))
