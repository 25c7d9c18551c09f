"""All benchmarks in one run, one table: ``python -m bench [--quick]``.

``--quick`` shrinks every benchmark (a smoke run in about a minute on 2 CPU cores, whose
figures are indicative only); without it each runs at its own default size.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import batched_training, evaluator, metric, scale

SIZES = {  # (full, quick)
    "metric": ({"n_models": 512, "n_examples": 1000}, {"n_models": 64, "n_examples": 200}),
    "evaluator": ({"n_models": 32}, {"n_models": 2}),
    # the goal's setting: 2 cores, so 2 threads (the plain loop's intra-op threads; two
    # batched groups at once); see bench/batched_training.py
    "batched_training": ({"models": 32, "threads": 2}, {"models": 4, "group": 4, "epochs": 2}),
    "scale": ({"n_models": 512, "shards": 64}, {"n_models": 48, "shards": 24}),
}


def run_metric(size: dict) -> list[tuple[str, str]]:
    res = metric.run(size["n_models"], size["n_examples"], naive_examples=3)
    return [
        ("size", f"N = {res['n_models']} x E = {res['n_examples']}"),
        ("seconds", f"{res['seconds']:.2f}"),
        ("ratio to rule by rule", f"{res['ratio']:.0f}x"),
    ]


def run_evaluator(size: dict) -> list[tuple[str, str]]:
    from local_eval.loading import load_unlearning
    from local_eval.pipeline import EvalConfig

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
    ]


def run_batched(size: dict) -> list[tuple[str, str]]:
    res = batched_training.run(**size)
    return [
        (
            "size",
            f"{res['models']} models, groups of {res['group']}, {res['epochs']} epochs, "
            f"{res['threads']} thread(s)",
        ),
        ("models/min one at a time", f"{res['plain_models_per_min']:.1f}"),
        ("models/min batched", f"{res['batched_models_per_min']:.1f}"),
        ("ratio (goal >= 4x at 2 threads)", f"{res['ratio']:.2f}x"),
        ("peak RSS MB", f"{res['peak_rss_mb']:.0f}"),
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


RUNNERS = {
    "metric": run_metric,
    "evaluator": run_evaluator,
    "batched_training": run_batched,
    "scale": run_scale,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="reduced sizes (smoke run)")
    args = parser.parse_args(argv)
    rows = []
    for name, runner in RUNNERS.items():
        size = SIZES[name][1 if args.quick else 0]
        rows += [(name, what, value) for what, value in runner(size)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"benchmarks ({'quick' if args.quick else 'full'} sizes)")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
