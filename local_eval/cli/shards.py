"""``python -m local_eval prepare | shard | merge``: one evaluation split over machines.

    python -m local_eval prepare OPTIONS                          # once: the original model
    python -m local_eval shard --shard i/K OPTIONS --out DIR_i    # K jobs, anywhere, any order
    python -m local_eval merge DIR_0 ... DIR_K-1 [--out RUN_DIR]  # once: the report

``OPTIONS`` are those of ``python -m local_eval`` (data, recipe, N, submission, budget,
seed, ...), the same for every shard: a Slurm array passes ``--shard
$SLURM_ARRAY_TASK_ID/$K``. Shard i computes the jobs ``k`` of ``local_eval.runs.jobs`` with
``k % K == i`` and writes their records to its own folder (``local_eval.runs.shards``); merge
checks the K folders belong to one evaluation, each once, and writes the report an
unsharded ``python -m local_eval`` writes, with equal signals.

The unlearning runs of every shard start from the same original model. On a CPU it is
trained bitwise reproducibly, so each shard may train it (or find it in its --cache-dir).
On GPUs it is not: run ``prepare`` once with a --cache-dir every shard reads (a shared
folder, or copy it to each machine); merge refuses shards that started from different
originals.

Errors end with one ``error:`` line and exit status 2 (``local_eval.cli.options.reporting_errors``).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from local_eval.cli.options import (
    build_parser,
    eval_config,
    evaluation_inputs,
    out_lock,
    reporting_errors,
    show_report,
)
from local_eval.reporting.outputs import default_out_dir, write_outputs
from local_eval.runs.jobs import ROLES, Shard
from local_eval.runs.pipeline import RETIME_BUDGET, prepare_original, run_shard
from local_eval.runs.shards import check_shard_folder, merge_shards, write_shard
from local_eval.training.cache import ModelCache, default_cache_dir

__all__ = ["COMMANDS", "merge_main", "prepare_main", "shard_main"]


def shard_main(argv: list[str]) -> int:
    parser = build_parser(
        "python -m local_eval shard",
        "Compute one shard of an evaluation (the jobs k with k % K == i) into --out; merge "
        "the K folders with 'python -m local_eval merge'.",
    )
    parser.add_argument(
        "--shard",
        required=True,
        metavar="i/K",
        help="this shard's number i (0 <= i < K) and the number of shards K",
    )
    args = parser.parse_args(argv)
    return reporting_errors(lambda: shard(args, argv), debug=args.debug)


def shard(args: argparse.Namespace, argv: list[str]) -> int:
    try:
        which = Shard.parse(args.shard)
    except ValueError as exc:
        raise ValueError(f"--shard: {exc}") from None
    if args.out is None:
        raise ValueError("give --out SHARD_DIR: the folder for this shard's records (one each)")
    config, method, cache_root = evaluation_inputs(args)
    if config.budget_s == RETIME_BUDGET:
        raise ValueError(
            "--budget-s retime times the machine each shard runs on, and the shards of one "
            "evaluation must share one budget: give --budget-s auto, or the seconds"
        )
    with out_lock(args.out):
        check_shard_folder(args.out, which)
        part = run_shard(
            config, method, shard=which, cache=ModelCache(cache_root), progress=not args.quiet
        )
        write_shard(part, args.out, command=argv)
    counts = Counter(job.role for job in part.records)
    what = ", ".join(f"{counts[role]} {role}" for role in ROLES if counts[role])
    seconds = sum(part.stage_seconds.values())
    print(f"shard {which}: {len(part.records)} jobs ({what}) in {seconds:.1f} s")
    print(f"written to {args.out}/; when all {which.count} shards are done: "
          "python -m local_eval merge SHARD_DIR... --out RUN_DIR")  # fmt: skip
    return 0


def merge_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m local_eval merge",
        description="Merge the K shard folders of one evaluation into its report.",
    )
    parser.add_argument("folders", nargs="+", type=Path, metavar="SHARD_DIR")
    parser.add_argument("--out", type=Path, help="report folder (default runs/<time>-...)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    args = parser.parse_args(argv)
    return reporting_errors(lambda: merge(args), debug=args.debug)


def merge(args: argparse.Namespace) -> int:
    result = merge_shards(args.folders)
    out = args.out or default_out_dir(result.config.dataset, result.method["source"])
    with out_lock(out):
        files = write_outputs(result, out, None)
    show_report(files, out)
    return 0


def prepare_main(argv: list[str]) -> int:
    parser = build_parser(
        "python -m local_eval prepare",
        "Train the original model of an evaluation into --cache-dir (or find it there), "
        "before its shards run on GPUs: they all start from this one. Takes the shards' "
        "options (the submission's are not needed).",
    )
    args = parser.parse_args(argv)
    return reporting_errors(lambda: prepare(args), debug=args.debug)


def prepare(args: argparse.Namespace) -> int:
    if args.no_cache:
        raise ValueError("prepare stores the original model in the cache: drop --no-cache")
    root = args.cache_dir or default_cache_dir()
    digest, trained = prepare_original(
        eval_config(args), cache=ModelCache(root), progress=not args.quiet
    )
    how = "trained" if trained else "found in the cache"
    print(f"original model {how}: weights sha256 {digest[:16]}..., in {root}")
    print(f"give every shard --cache-dir {root} (a shared folder, or a copy of it)")
    return 0


COMMANDS = {"prepare": prepare_main, "shard": shard_main, "merge": merge_main}
