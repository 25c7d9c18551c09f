"""``python -m local_eval``: evaluate a submission at home, as the competition would.

With no arguments: the kit's default ``unlearning`` on the digits data (random 10% forget
set, small CNN, N = 32 models per group, reference models cached), a result table on screen
and everything under ``runs/<time>-<dataset>-<method>/`` (see ``local_eval.report``).

``python -m local_eval score ...`` scores saved confidences or logits instead
(``local_eval.score_cli``), e.g. the ``unlearned.npz`` / ``retrained.npz`` of a run;
``python -m local_eval leaderboard ...`` ranks several methods (``local_eval.leaderboard``).

Errors (a broken submission, a bad path, a bad option) end with one line on stderr and
exit status 2 (1 for an unexpected failure); ``--debug`` shows the traceback instead.
Nothing is written to ``--out`` unless the whole evaluation succeeds; a path that cannot be
written is refused before any work, and a second evaluation writing to the same ``--out``
is refused while the first runs (a ``.NAME.lock`` file beside the folder).

Time: a run that exceeds ``--budget-s`` but finishes is scored, and the report counts the
runs over budget. A run still going after ``--run-timeout-s`` (default with a budget:
10 x budget + 60 s; none without one) is taken for a hang: it is interrupted and the
evaluation fails with exit status 2.

A ``--submission`` file or a notebook's definitions are code the user asked us to run: they
run in this process, with the user's rights.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .cache import CACHE_ENV, ModelCache, default_cache_dir

__all__ = ["build_parser", "main"]

USER_ERRORS = (ValueError, OSError)  # clear messages of our own checks, missing files
RECIPE_FIELDS = ("epochs", "lr", "batch_size", "weight_decay")
# EvalConfig fields only some commands have options for (the others keep the defaults)
OPTIONAL_CONFIG = ("threads", "trainer", "backend", "ray_address", "gpus_per_task")


def build_parser(
    prog: str = "python -m local_eval", description: str | None = None
) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=description
        or "Evaluate an unlearning submission locally with the competition's score. "
        "'python -m local_eval score --help' re-scores saved confidences; 'shard', 'merge' "
        "and 'prepare' split an evaluation over machines (see their --help).",
    )
    data = p.add_argument_group("data and models")
    data.add_argument(
        "--dataset", default="digits", help="digits (default), mnist5k, kaggle:PATH or cifar10:PATH"
    )
    data.add_argument(
        "--forget",
        default=None,
        help="random:FRACTION (default random:0.1), class:K, "
        "group:COLUMN[:FRACTION], given (kaggle: default)",
    )
    data.add_argument("--arch", default=None, help="smallcnn or resnet18 (default: by data)")
    data.add_argument(
        "--recipe",
        default=None,
        help="fast_smallcnn, organisers_face or cifar_kit (default: by arch/data)",
    )
    data.add_argument("--epochs", type=int, help="override the recipe's epochs")
    data.add_argument("--lr", type=float, help="override the recipe's (peak) learning rate")
    data.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    data.add_argument("--weight-decay", type=float, help="override the recipe's weight decay")

    sub = p.add_argument_group("the submission (at most one; default: the kit's unlearning)")
    sub.add_argument("--method", help="a name from submission.METHODS")
    sub.add_argument("--submission", type=Path, help="a .py file defining unlearning()")
    sub.add_argument(
        "--notebook",
        type=Path,
        help="an .ipynb whose code cells define unlearning() (only definitions "
        "run: see local_eval.loading)",
    )
    sub.add_argument(
        "--budget-s",
        type=float,
        help="seconds per unlearning run (passed as budget_s to methods that take it)",
    )
    sub.add_argument(
        "--run-timeout-s",
        type=float,
        help="interrupt a run still going after this many seconds (a hang) and fail "
        "(default: 10 x --budget-s + 60, none without a budget)",
    )

    run = p.add_argument_group("the run")
    run.add_argument("--n-models", type=int, default=32, help="models per group (default 32)")
    run.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    run.add_argument("--seed", type=int, default=0, help="split and model seeds (default 0)")
    run.add_argument(
        "--workers",
        type=int,
        help=(
            "processes training reference models (default: 1 on GPU; on CPU as many as the "
            "cores hold at --threads / $OMP_NUM_THREADS / 1 thread each, up to 4)"
        ),
    )
    run.add_argument(
        "--threads",
        type=int,
        help="torch threads per process on CPU (default: $OMP_NUM_THREADS, else cores // workers)",
    )
    run.add_argument(
        "--trainer",
        choices=("sequential", "batched"),
        default="sequential",
        help="how reference models are trained: one at a time (default) or in vectorised "
        "groups (local_eval.batched; recipes without augmentation only)",
    )
    add_backend_options(run)
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


def add_backend_options(group) -> None:
    from .backends import BACKENDS

    group.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default="local",
        help="where the models are trained and the submission runs: local (default: this "
        "process and --workers processes) or ray (Ray tasks on a cluster or a local "
        "instance; pip install -r requirements-ray.txt)",
    )
    group.add_argument(
        "--ray-address",
        help="--backend ray: the cluster to join (e.g. auto, ray://head:10001; default: "
        "start a local instance)",
    )
    group.add_argument(
        "--gpus-per-task",
        type=float,
        help="--backend ray on GPUs: the share of a GPU each job takes (default 1; 0.25 runs "
        "four small models per GPU)",
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["score"]:
        from .score_cli import main as score_main

        return score_main(argv[1:])
    if argv[:1] == ["leaderboard"]:
        from .leaderboard import main as leaderboard_main

        return leaderboard_main(argv[1:])
    if argv[:1] and argv[0] in ("shard", "merge", "prepare"):
        from .shard_cli import COMMANDS

        return COMMANDS[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    from submission.run import RunTimeout

    return reporting_errors(lambda: evaluate(args), debug=args.debug, also=(RunTimeout,))


def reporting_errors(command, *, debug: bool, also: tuple[type[BaseException], ...] = ()) -> int:
    """``command()``'s exit code; a user's mistake (:data:`USER_ERRORS`, or ``also``) becomes
    one ``error:`` line and exit 2, anything else one line and exit 1; ``debug`` re-raises."""
    try:
        return command()
    except (Exception, *also) as exc:
        if debug:
            raise
        if isinstance(exc, (*USER_ERRORS, *also)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def eval_config(args: argparse.Namespace):
    """The :class:`~local_eval.pipeline.EvalConfig` a command line describes (evaluate and
    leaderboard share it; options a subcommand lacks keep the config's defaults)."""
    from .pipeline import EvalConfig

    overrides = {f: getattr(args, f) for f in RECIPE_FIELDS if getattr(args, f) is not None}
    optional = {k: getattr(args, k) for k in OPTIONAL_CONFIG if hasattr(args, k)}
    return EvalConfig(
        dataset=args.dataset,
        forget=args.forget,
        arch=args.arch,
        recipe=args.recipe,
        recipe_overrides=overrides,
        n_models=args.n_models,
        device=args.device,
        seed=args.seed,
        budget_s=args.budget_s,
        workers=args.workers,
        **optional,
    )


def evaluate(args: argparse.Namespace) -> int:
    from .pipeline import run_evaluation

    config, method, cache_root = evaluation_inputs(args)
    out = args.out or default_out_dir(config.dataset, method.source)
    check_out(out)
    with out_lock(out):
        result = run_evaluation(
            config, method, cache=ModelCache(cache_root), progress=not args.quiet
        )
        files = write_outputs(result, out, cache_root)
    show_report(files, out)
    return 0


def show_report(files: list[Path], out: Path) -> None:
    """The summary of a written report, and what was written."""
    print(Path(files[0]).parent.joinpath("summary.txt").read_text(), end="")
    print(f"\nwritten to {out}/: " + ", ".join(Path(f).name for f in files))


def evaluation_inputs(args: argparse.Namespace):
    """``(config, method, cache root)`` of a command line that evaluates a submission
    (evaluate, shard): the method loaded (its notes shown) and given its run time limit."""
    from .loading import load_unlearning

    config = eval_config(args)
    method = load_unlearning(method=args.method, submission=args.submission, notebook=args.notebook)
    if not args.quiet:
        for note in method.notes:
            print(f"note: {note}", file=sys.stderr)
    method = with_time_limit(method, run_timeout(args))
    cache_root = None if args.no_cache else (args.cache_dir or default_cache_dir())
    return config, method, cache_root


def check_out(out: Path) -> None:
    """A clear error, before any work, when ``out`` cannot be created or written."""
    from submission.run import UsageError, check_out_folder

    try:
        check_out_folder(out)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


@contextlib.contextmanager
def out_lock(out: Path):
    """Exclusive right to write ``out`` while the block runs: a ``.NAME.lock`` file beside it,
    locked (released by the OS if this process dies) and removed at the end."""
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f".{out.name}.lock"
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise ValueError(
                f"another evaluation (pid {owner}) is writing to --out {out}; "
                "wait for it or choose another --out"
            ) from None
        try:
            current = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        handle.close()  # its holder removed it between our open and our lock: again
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()


def run_timeout(args: argparse.Namespace) -> float | None:
    if args.run_timeout_s is not None:
        if not args.run_timeout_s > 0:
            raise ValueError(f"--run-timeout-s must be positive, got {args.run_timeout_s}")
        return args.run_timeout_s
    return None if args.budget_s is None else 10 * args.budget_s + 60


def with_time_limit(method, limit_s: float | None):
    """``method`` whose every call is interrupted after ``limit_s`` seconds (a hang)."""
    if limit_s is None:
        return method
    from submission.run import time_limit

    fn = method.fn
    message = (  # the pipeline puts which run in front
        f"was still going after {limit_s:g} s (--run-timeout-s): it looks hung; "
        "make it honour budget_s, or raise --run-timeout-s"
    )

    def limited(*args, **kwargs):
        with time_limit(limit_s, message):
            return fn(*args, **kwargs)

    return dataclasses.replace(method, fn=limited)


def write_outputs(result, out: Path, cache_root: Path | None) -> list[Path]:
    """Score, then write the report into a temporary sibling of ``out`` and move the files
    in only when all of them exist, so a failure never leaves a half-written report."""
    from .report import build_report, versions, write_report

    start = time.perf_counter()
    report, details = build_report(result.signals, context=_context(result, cache_root))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        report["stage_seconds"]["report"] = time.perf_counter() - start
        report["versions"] = versions()
        written = write_report(report, details, result.signals, tmp)
        out.mkdir(exist_ok=True)
        final = []
        for path in written:
            os.replace(path, out / path.name)
            final.append(out / path.name)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _context(result, cache_root: Path | None) -> dict:
    cfg = result.config
    setup = result.data
    shards = f", {result.shards} shards merged" if result.shards > 1 else ""
    title = (
        f"Local evaluation: {cfg.dataset}, forget {setup['forget']} "
        f"({setup['sizes']['forget']} examples), {result.arch} / {result.recipe.name}, "
        f"N = {cfg.n_models}, {result.method['source']}, on {result.device}{shards}"
    )
    return {
        "title": title,
        "config": {**asdict(cfg), "recipe_overrides": dict(cfg.recipe_overrides)},
        "method": {
            "source": result.method["source"],
            "notes": list(result.method["notes"]),
            "budget_s": cfg.budget_s,
            "runs_over_budget": (
                None
                if cfg.budget_s is None
                else int(np.sum(result.signals.unlearned.seconds > cfg.budget_s))
            ),
        },
        "data": setup,
        "arch": result.arch,
        "recipe": result.recipe.as_dict(),
        "device": result.device,
        "stage_seconds": dict(result.stage_seconds),
        "models_trained": dict(result.trained),
        "shards": result.shards,
        "cache_dir": None if cache_root is None else str(cache_root),
    }


def default_out_dir(dataset: str, source: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(dataset).name}-{source.split(':', 1)[-1]}")
    return Path("runs") / f"{stamp}-{name[:60]}"
