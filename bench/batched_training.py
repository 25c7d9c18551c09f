"""Benchmark: reference models per minute, batched (``local_eval.training.batched``) vs one at a
time.

    python -m bench.batched_training [--models 32] [--group 16] [--rounds 4] [--epochs N]
                                     [--threads 2]

Trains the same seeds on the default digits setup (retain split, the ``fast_smallcnn``
recipe) with the plain loop (``train_new_model`` per seed) and with the batched trainer
(``group`` models per vectorised run), after a one-epoch warm-up of each, so torch's one-off
initialisation counts for neither. Prints models per minute of each, their ratio (goal:
>= 4x on 2 CPU cores), mean test accuracies (they should agree) and the peak RSS while each
trained.

The machine's speed drifts while it runs (other processes, the hypervisor taking the CPU:
the plain loop alone runs at quite different speeds from one run to the next), so the two
trainers are measured in ``rounds`` interleaved rounds, each on ``models`` new seeds, and
each trainer goes first in half of them, so that an order effect cannot favour one (early
runs with an odd number of rounds showed one; over longer runs the two orders averaged the
same ratio). The ratio is of the summed seconds; the rounds' own ratios and the
share of CPU time the hypervisor took (``steal``, from ``/proc/stat``) are printed beside
it, to show how steady the machine was.

``--threads T`` is ``torch.set_num_threads(T)`` for both: the plain loop uses T intra-op
threads, the batched trainer trains up to T groups at once, one thread each (see
``local_eval.training.batched._lanes``). The goal is for ``--threads 2`` (the default) on an
otherwise idle 2-core machine: with another job on one of the cores, the plain loop's two
OpenMP threads wait on each other (it slows down many times over) and the ratio means
nothing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.memory import PeakRSS
from local_eval.data.setup import load_setup
from local_eval.training.batched import DEFAULT_GROUP, train_new_models_batched
from local_eval.training.signals import accuracy, model_logits
from local_eval.training.train import get_recipe, train_new_model

GOAL_RATIO = 4.0
GOAL_THREADS = 2  # "on 2 CPU cores"
DEFAULT_ROUNDS = 4  # even: each trainer goes first in half the rounds


def run(
    *,
    models: int = 32,
    group: int = DEFAULT_GROUP,
    rounds: int = DEFAULT_ROUNDS,
    epochs: int | None = None,
    threads: int = 1,
) -> dict:
    before = torch.get_num_threads()  # restored: `python -m bench` runs other benches after
    torch.set_num_threads(threads)
    try:
        return _measure(models=models, group=group, rounds=rounds, epochs=epochs, threads=threads)
    finally:
        torch.set_num_threads(before)


def _measure(*, models: int, group: int, rounds: int, epochs: int | None, threads: int) -> dict:
    if rounds < 1 or models < 1:
        raise ValueError(f"need models >= 1 and rounds >= 1, got {models} and {rounds}")
    setup = load_setup("digits")
    recipe = get_recipe("fast_smallcnn", epochs=epochs)
    kwargs = dict(num_classes=setup.num_classes, device="cpu")
    data, val = setup.retain, setup.val

    warm = get_recipe("fast_smallcnn", epochs=1)
    train_new_model("smallcnn", data, None, warm, seed=1, **kwargs)
    train_new_models_batched("smallcnn", data, None, warm, seeds=[1, 2], **kwargs)

    def plain(seeds):
        return [train_new_model("smallcnn", data, val, recipe, seed=s, **kwargs) for s in seeds]

    def batched(seeds):
        return train_new_models_batched(
            "smallcnn", data, val, recipe, seeds=seeds, group_size=group, **kwargs
        )

    trainers = {"plain": plain, "batched": batched}
    seconds = {name: [] for name in trainers}
    results = {name: [] for name in trainers}
    peaks = {name: 0.0 for name in trainers}
    rises = {name: 0.0 for name in trainers}  # over the RSS before: what training needed
    steal_before = _cpu_times()
    for r in range(rounds):
        seeds = list(range(1000 + r * models, 1000 + (r + 1) * models))
        # alternate which goes first, so a slow stretch of the machine (another process,
        # the host taking the CPU) falls on both trainers alike rather than on one
        for name in ("plain", "batched") if r % 2 == 0 else ("batched", "plain"):
            with PeakRSS() as peak:
                start = time.perf_counter()
                results[name] += trainers[name](seeds)
                seconds[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks[name], peak.mb)
            rises[name] = max(rises[name], peak.rise_mb)
    steal = _steal_fraction(steal_before, _cpu_times())

    def mean_test_accuracy(trained) -> float:
        labels = setup.test.labels.numpy()
        return float(
            np.mean(
                [accuracy(model_logits(t.model, setup.test, device="cpu"), labels) for t in trained]
            )
        )

    plain_s, batched_s = sum(seconds["plain"]), sum(seconds["batched"])
    return {
        "models": models,
        "rounds": rounds,
        "group": group,
        "epochs": recipe.epochs,
        "threads": threads,
        "plain_models_per_min": 60 * models * rounds / plain_s,
        "batched_models_per_min": 60 * models * rounds / batched_s,
        "ratio": plain_s / batched_s,
        "round_ratios": [p / b for p, b in zip(seconds["plain"], seconds["batched"], strict=True)],
        "plain_accuracy": mean_test_accuracy(results["plain"]),
        "batched_accuracy": mean_test_accuracy(results["batched"]),
        "cpu_steal": steal,
        "plain_peak_rss_mb": peaks["plain"],
        "batched_peak_rss_mb": peaks["batched"],
        "plain_rise_mb": rises["plain"],
        "batched_rise_mb": rises["batched"],
    }


def run_setting(*, n_models: int = 8, rounds: int = 2, epochs: int | None = None) -> dict:
    """The competition-shaped setting's reference stage (``local_eval.runs.competition``:
    ``resnet18_narrow``, the organisers' recipe) as the evaluator runs it (its default
    workers and threads, an empty cache each time), with each trainer, in ``rounds``
    interleaved rounds (each trainer first in half of them; round r is seed r, so new
    models). The stage trains 2N retrained models and N - 1 originals (model 0, the
    original, is trained before it, alone, by the sequential trainer either way)."""
    import tempfile
    from pathlib import Path

    from local_eval.runs.competition import SETTING
    from local_eval.runs.loading import LoadedMethod
    from local_eval.runs.pipeline import EvalConfig, run_evaluation
    from local_eval.training.cache import ModelCache

    if rounds < 1 or n_models < 2:
        raise ValueError(f"need n_models >= 2 and rounds >= 1, got {n_models} and {rounds}")
    untouched = LoadedMethod(lambda net, *loaders: net, "bench:untouched", accepts_budget=False)
    overrides = {} if epochs is None else {"epochs": epochs}
    seconds = {"sequential": [], "batched": []}
    accuracy = {"sequential": [], "batched": []}
    for r in range(rounds):
        for trainer in ("sequential", "batched") if r % 2 == 0 else ("batched", "sequential"):
            config = EvalConfig(**{**SETTING, "trainer": trainer}, n_models=n_models, seed=r,
                                budget_s=None, recipe_overrides=overrides)  # fmt: skip
            with tempfile.TemporaryDirectory(prefix="bench-setting-") as tmp:
                cache = ModelCache(Path(tmp))
                result = run_evaluation(config, untouched, cache=cache, progress=False)
            seconds[trainer].append(result.stage_seconds["references"])
            accuracy[trainer].append(float(np.mean(result.signals.retrained.test_accuracy)))
    models = 3 * n_models - 1
    plain_s, batched_s = sum(seconds["sequential"]), sum(seconds["batched"])
    return {
        "n_models": n_models,
        "models": models,
        "rounds": rounds,
        "epochs": config.recipe_overrides.get("epochs") or 30,
        "plain_models_per_min": 60 * models * rounds / plain_s,
        "batched_models_per_min": 60 * models * rounds / batched_s,
        "ratio": plain_s / batched_s,
        "round_ratios": [
            p / b for p, b in zip(seconds["sequential"], seconds["batched"], strict=True)
        ],
        "plain_accuracy": float(np.mean(accuracy["sequential"])),
        "batched_accuracy": float(np.mean(accuracy["batched"])),
    }


def _cpu_times() -> list[int] | None:
    """The machine's cumulative CPU times (``/proc/stat``'s ``cpu`` line), None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None


def _steal_fraction(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of the machine's CPU time the hypervisor gave to others in between (the
    8th field, ``steal``): on a virtual machine the timings mean less when it is high."""
    if before is None or after is None or len(before) < 8 or len(after) < 8:
        return None
    delta = [a - b for a, b in zip(after, before, strict=False)]
    total = sum(delta[:8])  # guest times (fields 9-10) are already counted in user/nice
    return delta[7] / total if total > 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batched_training", description=__doc__)
    parser.add_argument("--models", type=int, default=32, help="models per round (default 32)")
    parser.add_argument("--group", type=int, default=DEFAULT_GROUP)
    parser.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS, help=f"default {DEFAULT_ROUNDS}"
    )
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument(
        "--threads", type=int, default=GOAL_THREADS, help=f"torch threads (default {GOAL_THREADS})"
    )
    args = parser.parse_args(argv)
    res = run(**vars(args))
    print(
        f"batched training: digits retain, fast_smallcnn ({res['epochs']} epochs), "
        f"{res['rounds']} rounds of {res['models']} models, groups of {res['group']}, "
        f"{res['threads']} thread(s)"
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
    rounds = ", ".join(f"{r:.2f}" for r in res["round_ratios"])
    print(f"  ratio:         {res['ratio']:.2f}x (goal >= {GOAL_RATIO:.0f}x): {verdict}")
    print(f"  per round:     {rounds}")
    print(f"  CPU steal:     {percent(res['cpu_steal'])} of the machine's time (the host's)")
    print(
        f"  peak RSS:      {res['plain_peak_rss_mb']:.0f} MB one at a time "
        f"(+{res['plain_rise_mb']:.0f} MB while training), {res['batched_peak_rss_mb']:.0f} MB "
        f"batched (+{res['batched_rise_mb']:.0f} MB)"
    )
    return 0


def percent(fraction: float | None) -> str:
    return "unknown" if fraction is None else f"{100 * fraction:.1f}%"


if __name__ == "__main__":
    raise SystemExit(main())
