"""Benchmark: reference models per minute, batched (``local_eval.batched``) vs one at a time.

    python -m bench.batched_training [--models 32] [--group 16] [--epochs N] [--threads 1]

Trains the same seeds on the default digits setup (retain split, the ``fast_smallcnn``
recipe) twice in one process: with the plain loop (``train_new_model`` per seed) and with
the batched trainer (``group`` models per vectorised run), after a one-epoch warm-up of
each, so torch's one-off initialisation counts for neither. Prints models per minute of
each, their ratio (goal: >= 4x on 2 CPU cores), mean test accuracies (they should agree)
and the process's peak RSS.

``--threads T`` is ``torch.set_num_threads(T)`` for both: the plain loop uses T intra-op
threads, the batched trainer trains up to T groups at once, one thread each (see
``local_eval.batched._lanes``). The goal is for ``--threads 2`` on an otherwise idle 2-core
machine: with another job on one of the cores, the plain loop's two OpenMP threads wait on
each other (measured: 13 models/min instead of ~120) and the ratio means nothing.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from local_eval.batched import DEFAULT_GROUP, train_new_models_batched
from local_eval.data import load_setup
from local_eval.signals import accuracy, model_logits
from local_eval.train import get_recipe, train_new_model

GOAL_RATIO = 4.0
GOAL_THREADS = 2  # "on 2 CPU cores"


def run(
    *, models: int = 32, group: int = DEFAULT_GROUP, epochs: int | None = None, threads: int = 1
) -> dict:
    before = torch.get_num_threads()  # restored: `python -m bench` runs other benches after
    torch.set_num_threads(threads)
    try:
        return _measure(models=models, group=group, epochs=epochs, threads=threads)
    finally:
        torch.set_num_threads(before)


def _measure(*, models: int, group: int, epochs: int | None, threads: int) -> dict:
    setup = load_setup("digits")
    recipe = get_recipe("fast_smallcnn", epochs=epochs)
    kwargs = dict(num_classes=setup.num_classes, device="cpu")
    data, val = setup.retain, setup.val
    seeds = list(range(1000, 1000 + models))

    warm = get_recipe("fast_smallcnn", epochs=1)
    train_new_model("smallcnn", data, None, warm, seed=1, **kwargs)
    train_new_models_batched("smallcnn", data, None, warm, seeds=[1, 2], **kwargs)

    start = time.perf_counter()
    plain = [train_new_model("smallcnn", data, val, recipe, seed=s, **kwargs) for s in seeds]
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = train_new_models_batched(
        "smallcnn", data, val, recipe, seeds=seeds, group_size=group, **kwargs
    )
    batched_s = time.perf_counter() - start

    def mean_test_accuracy(results) -> float:
        labels = setup.test.labels.numpy()
        return float(
            np.mean(
                [accuracy(model_logits(r.model, setup.test, device="cpu"), labels) for r in results]
            )
        )

    return {
        "models": models,
        "group": group,
        "epochs": recipe.epochs,
        "threads": threads,
        "plain_models_per_min": 60 * models / plain_s,
        "batched_models_per_min": 60 * models / batched_s,
        "ratio": plain_s / batched_s,
        "plain_accuracy": mean_test_accuracy(plain),
        "batched_accuracy": mean_test_accuracy(batched),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batched_training", description=__doc__)
    parser.add_argument("--models", type=int, default=32)
    parser.add_argument("--group", type=int, default=DEFAULT_GROUP)
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    res = run(models=args.models, group=args.group, epochs=args.epochs, threads=args.threads)
    print(
        f"batched training: digits retain, fast_smallcnn ({res['epochs']} epochs), "
        f"{res['models']} models, groups of {res['group']}, {res['threads']} thread(s)"
    )
    print(
        f"  one at a time: {res['plain_models_per_min']:7.1f} models/min, "
        f"mean test accuracy {res['plain_accuracy']:.4f}"
    )
    print(
        f"  batched:       {res['batched_models_per_min']:7.1f} models/min, "
        f"mean test accuracy {res['batched_accuracy']:.4f}"
    )
    verdict = "ok" if res["ratio"] >= GOAL_RATIO else "BELOW GOAL"
    if res["threads"] != GOAL_THREADS:
        verdict += f" (the goal is for --threads {GOAL_THREADS}, 2 idle cores)"
    print(f"  ratio:         {res['ratio']:.2f}x (goal >= {GOAL_RATIO:.0f}x): {verdict}")
    print(f"  peak RSS:      {res['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
