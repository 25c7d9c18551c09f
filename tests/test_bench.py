"""`python -m bench --quick`: every benchmark runs and reports its figures (not timings)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_bench_runs_every_benchmark_and_prints_its_figures():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    streamed = [line.split(" | ")[:2] for line in out.stderr.splitlines() if " | " in line]
    out = out.stdout
    rows = {}
    for line in out.splitlines()[1:]:
        name, what, value = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        rows[(name, what)] = value
    assert {name for name, _ in rows} == {
        "metric",
        "evaluator",
        "batched_training",
        "scale",
        "resnet18",
    }
    # the figures are numbers (timings vary; that they exist and parse is what is checked)
    for key in [
        ("metric", "seconds"),
        ("evaluator", "cold s"),
        ("evaluator", "warm s"),
        ("batched_training", "models/min one at a time"),
        ("batched_training", "models/min batched"),
        ("scale", "s per training"),
        ("resnet18", "one retraining s (estimate)"),
        ("resnet18", "one unlearning s (shrink_perturb, estimate)"),
        ("resnet18", "N = 512, one job at a time, h (estimate)"),
        ("resnet18", "models/min, 1 worker (estimate)"),
    ]:
        assert float(rows[key]) > 0, key
    assert float(rows[("metric", "ratio to rule by rule")].rstrip("x")) > 0
    ratio = rows[("batched_training", "ratio (goal >= 4x at 2 threads)")]
    assert float(ratio.rstrip("x")) > 0
    assert rows[("batched_training", "size")].startswith(
        "2 rounds of 4 models, groups of 4, 2 epochs"
    )
    assert len(rows[("batched_training", "ratio per round")].split(", ")) == 2
    # every row was also printed as soon as its benchmark finished
    assert [tuple(pair) for pair in streamed] == list(rows)


def test_only_runs_the_named_benchmarks_in_the_table_order(monkeypatch, capsys):
    import bench.__main__ as bench_main

    ran = []

    def fake(name):
        def runner(size):
            ran.append(name)
            return [("seconds", "1.5")]

        return runner

    monkeypatch.setattr(bench_main, "RUNNERS", {n: fake(n) for n in bench_main.RUNNERS})
    assert bench_main.main(["--only", "scale, metric"]) == 0
    assert ran == ["metric", "scale"]
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["metric | seconds | 1.5", "scale | seconds | 1.5"]
    assert captured.out.splitlines()[1:] == ["metric  seconds  1.5", "scale   seconds  1.5"]


def test_only_refuses_an_unknown_benchmark_naming_the_known_ones(capsys):
    import bench.__main__ as bench_main

    with pytest.raises(SystemExit) as exc:
        bench_main.main(["--only", "metric,resnet50"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--only: unknown benchmark(s) resnet50; choose from metric, evaluator," in err


def test_steal_fraction_is_the_steal_share_of_the_cpu_time_in_between():
    from bench.batched_training import _steal_fraction

    # /proc/stat cpu fields: user nice system idle iowait irq softirq steal guest guest_nice
    before = [100, 0, 20, 500, 0, 0, 0, 10, 50, 0]
    after = [190, 0, 30, 580, 0, 0, 0, 30, 90, 0]  # 200 ticks in all, 20 of them stolen
    assert _steal_fraction(before, after) == pytest.approx(0.1)
    assert _steal_fraction(None, after) is None
    assert _steal_fraction(before, before) is None  # no time passed: no share


def test_batched_bench_interleaves_rounds_and_sums_their_seconds(monkeypatch):
    """Fake trainers on a fake clock (plain 4 s per model, batched 1 s per model): the
    rounds alternate which trainer goes first, and the ratio is of the summed seconds."""
    import types

    from bench import batched_training
    from local_eval.training.models import build_model
    from local_eval.training.train import TrainResult

    now = [0.0]
    calls = []

    def result():
        return TrainResult(
            build_model("smallcnn", num_classes=10, in_channels=1, image_size=8),
            0.0,
            1,
            float("nan"),
        )

    def plain(arch, data, val, recipe, *, seed, **kwargs):
        calls.append(("plain", seed))
        now[0] += 4.0
        return result()

    def batched(arch, data, val, recipe, *, seeds, **kwargs):
        calls.append(("batched", tuple(seeds)))
        now[0] += 1.0 * len(seeds) if recipe.epochs > 1 else 0.0
        return [result() for _ in seeds]

    monkeypatch.setattr(batched_training, "train_new_model", plain)
    monkeypatch.setattr(batched_training, "train_new_models_batched", batched)
    monkeypatch.setattr(
        batched_training, "time", types.SimpleNamespace(perf_counter=lambda: now[0])
    )
    res = batched_training.run(models=2, group=2, rounds=2, epochs=3, threads=1)

    timed = calls[2:]  # after the two warm-ups
    assert timed == [
        ("plain", 1000),
        ("plain", 1001),
        ("batched", (1000, 1001)),  # round 0: plain first
        ("batched", (1002, 1003)),
        ("plain", 1002),
        ("plain", 1003),  # round 1: batched first
    ]
    assert res["round_ratios"] == [4.0, 4.0]
    assert res["ratio"] == 4.0
    assert res["plain_models_per_min"] == pytest.approx(60 * 4 / 16)
    assert res["batched_models_per_min"] == pytest.approx(60 * 4 / 4)
    assert 0.0 <= res["plain_accuracy"] <= 1.0


def test_batched_bench_prints_the_verdict_the_rounds_and_the_steal(monkeypatch, capsys):
    from bench import batched_training

    figures = {
        "models": 32,
        "rounds": 2,
        "group": 16,
        "epochs": 10,
        "threads": 2,
        "plain_models_per_min": 140.0,
        "batched_models_per_min": 518.0,
        "ratio": 3.7,
        "round_ratios": [4.47, 3.03],
        "plain_accuracy": 0.9881,
        "batched_accuracy": 0.988,
        "cpu_steal": None,
        "plain_peak_rss_mb": 897.0,
        "batched_peak_rss_mb": 927.0,
        "plain_rise_mb": 15.0,
        "batched_rise_mb": 94.0,
    }
    monkeypatch.setattr(batched_training, "run", lambda **kwargs: dict(figures))
    assert batched_training.main([]) == 0
    out = capsys.readouterr().out
    assert "ratio:         3.70x (goal >= 4x): BELOW GOAL" in out
    assert "per round:     4.47, 3.03" in out
    assert "CPU steal:     unknown" in out
    assert "+94 MB" in out
    figures.update(ratio=4.2, threads=1, cpu_steal=0.002)
    batched_training.main([])
    out = capsys.readouterr().out
    assert "4.20x (goal >= 4x): ok (the goal is for --threads 2, 2 idle cores)" in out
    assert "CPU steal:     0.2% of the machine's time" in out
