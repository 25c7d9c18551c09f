"""`python -m bench --quick`: every benchmark runs and reports its figures (not timings);
``--markdown`` writes them as a page, whole or not at all."""

import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

import submission

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_bench_runs_every_benchmark_and_prints_its_figures(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    page = tmp_path / "bench.md"
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--markdown", str(page)],
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
        "batched_setting",
        "scale",
        "resnet18",
        "setting",
        "reset_step",
    }
    # the figures are numbers (timings vary; that they exist and parse is what is checked)
    for key in [
        ("metric", "seconds"),
        ("evaluator", "cold s"),
        ("evaluator", "warm s"),
        ("batched_training", "models/min one at a time"),
        ("batched_training", "models/min batched"),
        ("batched_setting", "models/min one at a time"),
        ("batched_setting", "models/min batched"),
        ("scale", "s per training"),
        ("resnet18", "one retraining s (estimate)"),
        ("resnet18", f"one unlearning s ({submission.DEFAULT_METHOD}, estimate)"),
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
    assert float(rows[("batched_setting", "ratio")].rstrip("x")) > 0
    assert rows[("batched_setting", "size")] == "2 rounds of N = 2 (5 models each), 2 epochs"
    # the competition-shaped setting beside the competition's figures (its shape is exact)
    assert rows[("setting", "forget persons, whole (competition)")] == "15, 0 split (15)"
    assert rows[("setting", "forget share of training (competition)")] == "2.38% (2%)"
    assert rows[("setting", "relearning epochs at 20% of one retraining (competition)")].endswith(
        "of 30 (6 of 30)"
    )
    # a reset step against a forward, for each model at its shape, beside relearn's constant
    assert rows[("reset_step", "relearn counts a reset step as (forwards)")] == "4"
    for model in ("smallcnn 1x8x8", "resnet18_narrow 1x8x8", "resnet18 3x32x32"):
        times, forwards = rows[("reset_step", f"{model}: forward / reset step ms, step in "
                                "forwards")].split(", ")  # fmt: skip
        assert all(float(t) > 0 for t in times.split(" / ")) and float(forwards) > 0
    # every row was also printed as soon as its benchmark finished
    assert [tuple(pair) for pair in streamed] == list(rows)
    # and the page holds the same rows, one section per benchmark, marked as a smoke run
    text = page.read_text()
    assert "**A quick smoke run**" in text
    assert f"- command: `OMP_NUM_THREADS=1 python -m bench --quick --markdown {page}`" in text
    assert re.findall(r"^## (\w+)$", text, re.MULTILINE) == [
        "metric",
        "evaluator",
        "batched_training",
        "batched_setting",
        "scale",
        "resnet18",
        "setting",
        "reset_step",
    ]
    for (name, what), value in rows.items():
        assert f"| {what} | {value} |" in text, (name, what)


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


def fake_runners(monkeypatch, fail: str | None = None) -> list[str]:
    """Every benchmark replaced by one that returns two rows at once (or, for ``fail``,
    raises); the names that ran, in order."""
    import bench.__main__ as bench_main

    ran = []

    def fake(name):
        def runner(size):
            ran.append(name)
            if name == fail:
                raise RuntimeError(f"{name} broke")
            return [("seconds", f"{len(name)}.5"), ("a | b", "x")]

        return runner

    monkeypatch.setattr(bench_main, "RUNNERS", {n: fake(n) for n in bench_main.RUNNERS})
    return ran


def test_markdown_page_has_the_header_and_one_section_per_benchmark_run(
    monkeypatch, tmp_path, capsys
):
    import bench.__main__ as bench_main
    from local_eval.common.provenance import versions

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    ran = fake_runners(monkeypatch)
    page = tmp_path / "page.md"
    before = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    assert bench_main.main(["--only", "scale,metric", "--markdown", str(page)]) == 0
    assert ran == ["metric", "scale"]
    text = page.read_text()
    lines = text.splitlines()
    assert lines[0] == "# Benchmarks"
    assert "quick" not in text.lower()  # a full-size run says nothing of a smoke run

    fields = dict(line[2:].split(": ", 1) for line in lines if line.startswith("- "))
    assert (
        fields["command"] == f"`OMP_NUM_THREADS=2 python -m bench --only scale,metric "
        f"--markdown {page}`"
    )
    cpu = bench_main.cpu_model()
    assert cpu and cpu != "unknown"
    assert fields["machine"].startswith(f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__}")
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    assert f"; device {device}" in fields["machine"]
    when = datetime.strptime(fields["date"][:20], "%Y-%m-%d %H:%M UTC").replace(tzinfo=timezone.utc)
    assert before <= when <= datetime.now(timezone.utc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC \(start; the run took \d+\.\d min\)",
                        fields["date"])  # fmt: skip
    commit = versions()["kit_commit"]
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert fields["kit commit"] == (f"{commit} with uncommitted changes" if dirty else commit)

    # one section per benchmark that ran, in the table's order, each with its sentence and rows
    assert re.findall(r"^## (\w+)$", text, re.MULTILINE) == ["metric", "scale"]
    metric_part = text.split("## metric\n", 1)[1].split("## scale\n", 1)[0]
    assert bench_main.DESCRIPTIONS["metric"] in metric_part
    assert "| measure | value |\n|---|---|\n| seconds | 6.5 |\n| a \\| b | x |\n" in metric_part
    assert "| seconds | 5.5 |" in text.split("## scale\n", 1)[1]
    # the table on stdout is as before, and the page's path is said
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1] == "metric  seconds  6.5"
    assert captured.err.splitlines()[-1] == f"wrote {page}"


def test_every_benchmark_has_a_sentence_for_the_page():
    import bench.__main__ as bench_main

    assert set(bench_main.DESCRIPTIONS) == set(bench_main.RUNNERS)
    for sentence in bench_main.DESCRIPTIONS.values():
        assert "baseline" in sentence or "no ratio" in sentence


def test_markdown_of_a_quick_run_says_its_figures_are_indicative_only(monkeypatch, tmp_path):
    import bench.__main__ as bench_main

    fake_runners(monkeypatch)
    page = tmp_path / "quick.md"
    assert bench_main.main(["--quick", "--only", "evaluator", "--markdown", str(page)]) == 0
    text = page.read_text()
    assert "**A quick smoke run** (`--quick`: every benchmark at reduced size): its figures " \
        "are indicative only." in text  # fmt: skip
    assert re.findall(r"^## (\w+)$", text, re.MULTILINE) == ["evaluator"]


def test_markdown_without_a_path_writes_the_default_page(monkeypatch, tmp_path):
    import bench.__main__ as bench_main

    assert bench_main.DEFAULT_PAGE == ROOT / "docs" / "benchmarks.md"
    fake_runners(monkeypatch)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    default = tmp_path / "docs" / "benchmarks.md"
    default.parent.mkdir()
    monkeypatch.setattr(bench_main, "DEFAULT_PAGE", default)
    assert bench_main.main(["--only", "metric", "--markdown"]) == 0
    text = default.read_text()
    assert "- command: `python -m bench --only metric --markdown`" in text
    assert "## metric" in text


def test_a_failure_midway_leaves_no_page_and_no_temporary_file(monkeypatch, tmp_path, capsys):
    import bench.__main__ as bench_main

    ran = fake_runners(monkeypatch, fail="batched_training")
    page = tmp_path / "page.md"
    with pytest.raises(RuntimeError, match="batched_training broke"):
        bench_main.main(["--markdown", str(page)])
    assert ran == ["metric", "evaluator", "batched_training"]  # it stopped there
    assert list(tmp_path.iterdir()) == []
    err = capsys.readouterr().err
    assert f"bench: batched_training failed; {page} was not written" in err
    # what had finished was still streamed
    assert "evaluator | seconds | 9.5" in err


def test_a_failed_run_leaves_the_previous_page_untouched(monkeypatch, tmp_path):
    import bench.__main__ as bench_main

    page = tmp_path / "page.md"
    page.write_text("# the previous page\n")
    fake_runners(monkeypatch, fail="resnet18")
    with pytest.raises(RuntimeError):
        bench_main.main(["--markdown", str(page)])
    assert page.read_text() == "# the previous page\n"
    assert list(tmp_path.iterdir()) == [page]

    # a failure while the page itself is being written: the old page stays, whole, and the
    # temporary file beside it is gone
    fake_runners(monkeypatch)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bench_main.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        bench_main.main(["--only", "metric", "--markdown", str(page)])
    assert page.read_text() == "# the previous page\n"
    assert list(tmp_path.iterdir()) == [page]


def test_markdown_refuses_a_folder_that_does_not_exist_before_running_anything(
    monkeypatch, tmp_path, capsys
):
    import bench.__main__ as bench_main

    ran = fake_runners(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        bench_main.main(["--markdown", str(tmp_path / "missing" / "page.md")])
    assert exc.value.code == 2
    assert ran == []
    assert f"the folder {tmp_path / 'missing'} does not exist; create it" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_main.main(["--markdown", str(tmp_path)])
    assert "is a folder; give a file name" in capsys.readouterr().err


def test_the_commit_line_says_when_the_checkout_has_uncommitted_changes(monkeypatch):
    import bench.__main__ as bench_main
    import local_eval.common.provenance as provenance

    monkeypatch.setattr(provenance, "versions", lambda: {"kit_commit": "abc123"})
    for dirty, line in [
        (True, "abc123 with uncommitted changes"),
        (False, "abc123"),
        (None, "abc123 (whether there were uncommitted changes is unknown)"),
    ]:
        monkeypatch.setattr(provenance, "git_dirty", lambda d=dirty: d)
        assert bench_main.kit_commit() == line
    monkeypatch.setattr(provenance, "versions", lambda: {"kit_commit": None})
    assert bench_main.kit_commit().startswith("unknown")


def test_the_machine_names_the_gpu_when_cuda_is_there(monkeypatch):
    import bench.__main__ as bench_main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H200")
    assert bench_main.machine()["device"] == "cuda (NVIDIA H200)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_main.machine()["device"] == "cpu (no CUDA device)"


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
