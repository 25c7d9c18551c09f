"""Benchmark: the default main job (``python -m local_eval``), cold and warm cache, by stage.

    python -m bench.evaluator [--n-models 32] [--dataset digits] [--method NAME]

Runs the whole evaluation twice in one process with a fresh temporary model cache: first
cold (every reference and floor model trained), then warm (everything from the cache; only
the submission's runs, scoring and the report remain), and prints the seconds of each
stage and the warm/cold ratio. Goal: cold <= 3 min, warm <= 1 min at N = 32 on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.memory import PeakRSS
from local_eval.reporting.outputs import write_outputs
from local_eval.runs.loading import load_unlearning
from local_eval.runs.pipeline import EvalConfig, run_evaluation
from local_eval.training.cache import ModelCache

STAGES = ("data", "original", "unlearning", "references", "report")
GOALS_S = {"cold": 180.0, "warm": 60.0}


def timed_run(config: EvalConfig, method, cache_root: Path, out: Path) -> dict[str, float]:
    """Seconds per stage of one evaluation (report included), plus ``total``, the models
    trained and this process's peak RSS meanwhile (the evaluator's worker processes, which
    train the references on a CPU, hold their own memory beside it)."""
    with PeakRSS() as peak:
        start = time.perf_counter()
        result = run_evaluation(config, method, cache=ModelCache(cache_root), progress=False)
        report_start = time.perf_counter()
        write_outputs(result, out, cache_root)
        stages = {**result.stage_seconds, "report": time.perf_counter() - report_start}
        stages["total"] = time.perf_counter() - start
    stages["models_trained"] = sum(result.trained.values())
    stages["peak_rss_mb"] = peak.mb  # this process; worker processes hold their own
    return stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.evaluator", description=__doc__)
    parser.add_argument("--n-models", type=int, default=32)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--method", default=None, help="default: the kit's unlearning")
    args = parser.parse_args(argv)

    config = EvalConfig(dataset=args.dataset, n_models=args.n_models)
    method = load_unlearning(method=args.method)
    with tempfile.TemporaryDirectory(prefix="bench-evaluator-") as tmp:
        root = Path(tmp)
        runs = {
            kind: timed_run(config, method, root / "cache", root / f"out-{kind}")
            for kind in ("cold", "warm")
        }
    print(f"evaluator: {args.dataset}, N = {args.n_models}, {method.source}")
    print(f"{'stage':<12}{'cold s':>10}{'warm s':>10}")
    for stage in (*STAGES, "total"):
        print(f"{stage:<12}{runs['cold'][stage]:>10.1f}{runs['warm'][stage]:>10.1f}")
    print(f"{'models':<12}{runs['cold']['models_trained']:>10}{runs['warm']['models_trained']:>10}")
    cold_mb, warm_mb = runs["cold"]["peak_rss_mb"], runs["warm"]["peak_rss_mb"]
    print(f"{'peak RSS MB':<12}{cold_mb:>10.0f}{warm_mb:>10.0f}  (this process; workers apart)")
    ratio = runs["warm"]["total"] / runs["cold"]["total"]
    print(f"warm / cold: {ratio:.2f}")
    for kind, goal in GOALS_S.items():
        verdict = "ok" if runs[kind]["total"] <= goal else "OVER"
        print(f"{kind}: {runs[kind]['total']:.0f} s (goal <= {goal:.0f} s at N = 32): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
