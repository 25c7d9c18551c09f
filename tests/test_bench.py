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
    ).stdout
    rows = {}
    for line in out.splitlines()[1:]:
        name, what, value = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        rows[(name, what)] = value
    assert {name for name, _ in rows} == {"metric", "evaluator", "batched_training", "scale"}
    # the figures are numbers (timings vary; that they exist and parse is what is checked)
    for key in [
        ("metric", "seconds"),
        ("evaluator", "cold s"),
        ("evaluator", "warm s"),
        ("batched_training", "models/min one at a time"),
        ("batched_training", "models/min batched"),
        ("scale", "s per training"),
    ]:
        assert float(rows[key]) > 0, key
    assert float(rows[("metric", "ratio to rule by rule")].rstrip("x")) > 0
    ratio = rows[("batched_training", "ratio (goal >= 4x at 2 threads)")]
    assert float(ratio.rstrip("x")) > 0
    assert rows[("batched_training", "size")].startswith("4 models, groups of 4, 2 epochs")
