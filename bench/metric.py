"""Benchmark: the fast scorer against the rule-by-rule transcription, in one process.

    python -m bench.metric [--n-models 512] [--examples 1000] [--naive-examples 3]

Prints the seconds for the whole ``(N, E)`` matrix, ms per example, and the speed ratio to
the straightforward implementation measured on a slice of the same data, after checking that
both give identical epsilons on that slice. Goal (issue): N = 512 x E = 1000 in <= 10 s on
2 CPU cores (stretch: 2 s); the organisers' code needs seconds per example.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.memory import PeakRSS
from local_eval.scoring import metric
from local_eval.scoring.metric_naive import per_example_epsilons_naive


def synthetic_confidences(n_models: int, n_examples: int, *, seed: int = 0):
    """Unlearned and retrained groups that overlap as real checkpoints do (shifted, wider)."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(2.0, 3.0, n_examples)
    unlearned = rng.normal(centre + rng.normal(0.3, 0.5, n_examples), 1.5, (n_models, n_examples))
    retrained = rng.normal(centre, 1.2, (n_models, n_examples))
    return unlearned, retrained


def run(n_models: int, n_examples: int, naive_examples: int) -> dict:
    u, r = synthetic_confidences(n_models, n_examples)
    metric.per_example_epsilons(u[:, :1], r[:, :1])  # build the table once, outside timing

    with PeakRSS() as peak:
        start = time.perf_counter()
        fast = metric.per_example_epsilons(u, r)
        fast_s = time.perf_counter() - start

    start = time.perf_counter()
    slow = per_example_epsilons_naive(u[:, :naive_examples], r[:, :naive_examples])
    naive_s = time.perf_counter() - start
    if not np.array_equal(slow, fast[:naive_examples]):
        raise SystemExit("MISMATCH: fast and rule-by-rule epsilons differ on the slice")

    fast_per = fast_s / n_examples
    naive_per = naive_s / naive_examples
    return {
        "n_models": n_models,
        "n_examples": n_examples,
        "seconds": fast_s,
        "ms_per_example": 1000 * fast_per,
        "naive_ms_per_example": 1000 * naive_per,
        "ratio": naive_per / fast_per,
        "forget_quality": float(metric.epsilon_points(fast, n_models)[1].mean()),
        # the inputs (2 x N x E float64) are held before the block; the scorer's own working
        # memory is the rise over them
        "peak_rss_mb": peak.mb,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-models", type=int, default=512)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--naive-examples", type=int, default=3)
    args = parser.parse_args()
    res = run(args.n_models, args.examples, args.naive_examples)
    print(f"scorer benchmark (CPU threads: {os.cpu_count()})")
    print(f"  N = {res['n_models']} models x E = {res['n_examples']} examples")
    print(
        f"  fast scorer:      {res['seconds']:.2f} s total, {res['ms_per_example']:.2f} ms/example"
    )
    print(
        f"  rule by rule:     {res['naive_ms_per_example']:.1f} ms/example "
        f"(on {args.naive_examples} examples, identical epsilons)"
    )
    print(f"  ratio:            {res['ratio']:.0f}x faster")
    print(f"  F of the synthetic case: {res['forget_quality']:.4f}")
    print(f"  peak RSS while scoring: {res['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
