"""All benchmarks in one run, one table: ``python -m bench [--quick] [--only NAMES]``.

``--quick`` shrinks every benchmark (a smoke run in about a minute on 2 CPU cores, whose
figures are indicative only); without it each runs at its own default size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from bench import batched_training, evaluator, metric, resnet18, scale

SIZES = {  # (full, quick)
    "metric": ({"n_models": 512, "n_examples": 1000}, {"n_models": 64, "n_examples": 200}),
    "evaluator": ({"n_models": 32}, {"n_models": 2}),
    # the goal's setting: 2 cores, so 2 threads (the plain loop's intra-op threads; two
    # batched groups at once); see bench/batched_training.py
    "batched_training": (
        {"models": 32, "threads": 2, "rounds": 4},
        {"models": 4, "group": 4, "epochs": 2, "rounds": 2},
    ),
    "scale": ({"n_models": 512, "shards": 64}, {"n_models": 48, "shards": 24}),
    # full: the competition's size on a GPU (and 4 trainings at once beside one alone), a
    # reduced run with an estimate on a CPU (see bench/resnet18.py)
    "resnet18": ({"gpu_workers": 4}, {"images": 128, "epochs": 1, "gpu_workers": 2}),
}


def run_metric(size: dict) -> list[tuple[str, str]]:
    res = metric.run(size["n_models"], size["n_examples"], naive_examples=3)
    return [
        ("size", f"N = {res['n_models']} x E = {res['n_examples']}"),
        ("seconds", f"{res['seconds']:.2f}"),
        ("ratio to rule by rule", f"{res['ratio']:.0f}x"),
        ("peak RSS MB", f"{res['peak_rss_mb']:.0f}"),
    ]


def run_evaluator(size: dict) -> list[tuple[str, str]]:
    from local_eval.runs.loading import load_unlearning
    from local_eval.runs.pipeline import EvalConfig

    config = EvalConfig(dataset="digits", n_models=size["n_models"])
    method = load_unlearning(method=None)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = Path(tmp)
        runs = {
            kind: evaluator.timed_run(config, method, root / "cache", root / f"out-{kind}")
            for kind in ("cold", "warm")
        }
    return [
        ("size", f"digits, N = {size['n_models']}"),
        ("cold s", f"{runs['cold']['total']:.1f}"),
        ("warm s", f"{runs['warm']['total']:.1f}"),
        (
            "peak RSS MB cold / warm (main process)",
            f"{runs['cold']['peak_rss_mb']:.0f} / {runs['warm']['peak_rss_mb']:.0f}",
        ),
    ]


def run_batched(size: dict) -> list[tuple[str, str]]:
    res = batched_training.run(**size)
    return [
        (
            "size",
            f"{res['rounds']} rounds of {res['models']} models, groups of {res['group']}, "
            f"{res['epochs']} epochs, {res['threads']} thread(s)",
        ),
        ("models/min one at a time", f"{res['plain_models_per_min']:.1f}"),
        ("models/min batched", f"{res['batched_models_per_min']:.1f}"),
        ("ratio (goal >= 4x at 2 threads)", f"{res['ratio']:.2f}x"),
        ("ratio per round", ", ".join(f"{r:.2f}" for r in res["round_ratios"])),
        ("CPU steal", batched_training.percent(res["cpu_steal"])),
        (
            "peak RSS MB one at a time (rise)",
            f"{res['plain_peak_rss_mb']:.0f} (+{res['plain_rise_mb']:.0f})",
        ),
        (
            "peak RSS MB batched (rise)",
            f"{res['batched_peak_rss_mb']:.0f} (+{res['batched_rise_mb']:.0f})",
        ),
    ]


def run_scale(size: dict) -> list[tuple[str, str]]:
    res = scale.run(**size)
    n, merge = res["n_models"], res["merge"]
    return [
        ("size", f"digits, N = {n}, real shard 0/{res['shards']} ({res['shard_jobs']} jobs)"),
        ("s per training", f"{res['seconds_per_training']:.2f}"),
        ("s per unlearning run", f"{res['seconds_per_run']:.2f}"),
        ("all jobs on one core, h", f"{res['projected_cpu_hours']:.2f}"),
        ("shard peak RSS MB", f"{res['shard_rss_mb']:.0f}"),
        (f"merge N = {n} s / peak RSS MB", f"{merge[n]['seconds']:.1f} / {merge[n]['rss_mb']:.0f}"),
        ("merge N = 32 s / peak RSS MB", f"{merge[32]['seconds']:.1f} / {merge[32]['rss_mb']:.0f}"),
        ("imports alone peak RSS MB", f"{res['imports_rss_mb']:.0f}"),
    ]


def run_resnet18(size: dict) -> list[tuple[str, str]]:
    size = dict(size)
    gpu_workers = size.pop("gpu_workers")
    alone = resnet18.run(workers=1, models=1, **size)
    kind = "measured" if alone["full_size"] else "estimate"
    rows = [
        ("device", alone["device"]),
        ("size", f"{alone['epochs']} epoch(s) on {alone['images']} {alone['data']} images"),
        (f"one retraining s ({kind})", f"{alone['retraining_s']:.1f}"),
        (
            f"one unlearning s ({alone['unlearning_method']}, {kind})",
            f"{alone['unlearning_s']:.1f}",
        ),
        (
            f"N = 512, one job at a time, h ({kind})",
            f"{resnet18.projected_hours(alone['retraining_s'], alone['unlearning_s']):.1f}",
        ),
        (f"models/min, 1 worker ({kind})", f"{alone['models_per_min']:.3f}"),
        (f"peak MB ({alone['peak_kind']})", f"{alone['peak_mb']:.0f}"),
    ]
    if torch.cuda.is_available():  # several trainings at once on the GPU
        shared = resnet18.run(workers=gpu_workers, **size)
        rows.append(
            (f"models/min, {gpu_workers} workers ({kind})", f"{shared['models_per_min']:.3f}")
        )
    return rows


RUNNERS = {
    "metric": run_metric,
    "evaluator": run_evaluator,
    "batched_training": run_batched,
    "scale": run_scale,
    "resnet18": run_resnet18,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced sizes (smoke run)")
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated benchmarks to run, of: {', '.join(RUNNERS)} (default: all)",
    )
    args = parser.parse_args(argv)
    names = selected(args.only, parser)
    rows = []
    for name in names:
        size = SIZES[name][1 if args.quick else 0]
        new = [(name, what, value) for what, value in RUNNERS[name](size)]
        # each benchmark's figures as soon as they exist (stderr): a run cut short by a
        # time limit still says what it measured
        for row in new:
            print(" | ".join(row), file=sys.stderr, flush=True)
        rows += new
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"benchmarks ({'quick' if args.quick else 'full'} sizes)")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def selected(only: str | None, parser: argparse.ArgumentParser) -> list[str]:
    """The benchmarks ``--only`` names, in the table's order; all without it."""
    if only is None:
        return list(RUNNERS)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNNERS]
    if unknown or not names:
        parser.error(
            f"--only: unknown benchmark(s) {', '.join(unknown) or repr(only)}; "
            f"choose from {', '.join(RUNNERS)}"
        )
    return [n for n in RUNNERS if n in names]


if __name__ == "__main__":
    raise SystemExit(main())
