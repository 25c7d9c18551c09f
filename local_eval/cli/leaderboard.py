"""``python -m local_eval leaderboard``: the command line of
:mod:`local_eval.reporting.leaderboard`."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import submission
from local_eval.cli.options import (
    build_parser,
    eval_config,
    out_lock,
    reporting_errors,
    run_timeout,
)
from local_eval.common.journal import Journal
from local_eval.common.provenance import versions
from local_eval.reporting.leaderboard import (
    board_identity,
    choose_methods,
    evaluate_methods,
    format_markdown,
    machine,
    rank,
    write_board,
)
from local_eval.training.cache import ModelCache, default_cache_dir

__all__ = ["main", "parser"]

# In --out: each finished evaluation, kept for a resume (local_eval.common.journal).
JOURNAL = ".progress"


def parser() -> argparse.ArgumentParser:
    p = build_parser(
        "python -m local_eval leaderboard",
        "Evaluate several methods under one setup and one per-run budget, sharing the "
        "reference models (trained once, cached), and rank them.",
        submission=False,
    )
    p.add_argument(
        "--methods",
        default="all",
        help="all (default: every method) or a comma list of names and 'all'; NAME[K=V,...] "
        "adds a variant of a method with those hyperparameters, e.g. all,relearn[regime=reset]",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="evaluate every method this many times on the same references, board after "
        "board, and rank by the mean (default 1); see docs/leaderboard.md",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    return reporting_errors(lambda: run(args, argv), debug=args.debug)


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.no_cache:
        raise ValueError("the leaderboard trains the references once for every method, in the "
                         "model cache: drop --no-cache")  # fmt: skip
    names = choose_methods(args.methods)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be 1 or more, got {args.repeats}")
    given = eval_config(args)
    out = args.out or _default_out(given.dataset)
    cache = ModelCache(args.cache_dir or default_cache_dir())

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    start = time.perf_counter()
    total = len(names) * args.repeats
    timeout = run_timeout(args)
    with out_lock(out):
        identity = board_identity(given, names, repeats=args.repeats, run_timeout_s=timeout)
        journal = Journal(out / JOURNAL, identity, what="leaderboard")
        read_back = _evaluations(journal)
        if read_back:
            log(f"resuming the board in {out}: {read_back} of {total} evaluations read back "
                f"(delete {out / JOURNAL} to run them again)")  # fmt: skip
        else:
            log(f"board: {out} (if it is interrupted, the same command with --out {out} "
                "resumes it)")  # fmt: skip
        try:
            # "auto" / "retime" resolved at each repeat's start, one budget for every method of it
            rows, shared = evaluate_methods(
                given,
                names,
                cache=cache,
                default=submission.DEFAULT_METHOD,
                run_timeout_s=timeout,
                repeats=args.repeats,
                progress=not args.quiet,
                log=log,
                journal=journal,
            )
        except KeyboardInterrupt:
            kept = _evaluations(journal)
            print(f"interrupted: {kept} of {total} evaluations are kept in {out}; run the same "
                  f"command with --out {out} to resume", file=sys.stderr)  # fmt: skip
            return 130
        setup = shared.get("setup", {})
        device = setup.get("device", args.device)
        meta = {
            "title": _title(args, setup, given, shared),
            "command": "python -m local_eval leaderboard " + shlex.join(argv),
            "machine": machine(device),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "kit_commit": versions()["kit_commit"],
            "n_models": given.n_models,
            "repeats": args.repeats,
            "methods": names,
            "default_method": submission.DEFAULT_METHOD,
            "wall_s": time.perf_counter() - start,  # this start's: a resumed board's is shorter
            "resumed": {"read_back": read_back, "evaluations": total} if read_back else None,
            "cache_dir": str(cache.root),
            **shared,
        }
        ranked = rank(rows)
        files = write_board(ranked, meta, out)
    print(format_markdown(ranked, meta), end="")
    print(f"\nwritten to {out}/: " + ", ".join(p.name for p in files))
    return 0


def _evaluations(journal: Journal) -> int:
    """How many (repeat, method) evaluations ``journal`` holds."""
    return sum(1 for key in journal.keys() if key.startswith("row-"))


def _title(args: argparse.Namespace, setup: dict, config, shared: dict) -> str:
    forget = setup.get("forget", config.forget or "default forget set")
    budgets = shared.get("repeat_summary", {}).get("budget_s") or [shared["budget_s"]]
    if shared["budget_s"] is None:
        budget = "no budget"
    elif max(budgets) > min(budgets):
        budget = f"{min(budgets):.3g}-{max(budgets):.3g} s per run"
    else:
        budget = f"{shared['budget_s']:.3g} s per run"
    if args.budget_s == "auto":
        budget += " (auto: 20% of the original's training)"
    elif args.budget_s == "retime":
        what = "each repeat's" if args.repeats > 1 else "the"
        budget += f" (retime: 20% of the original's training, timed again at {what} start)"
    return f"{config.dataset}, forget {forget}, N = {config.n_models}, {budget}"


def _default_out(dataset: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(dataset).name)[:40]
    return Path("runs") / f"{stamp}-leaderboard-{name}"
