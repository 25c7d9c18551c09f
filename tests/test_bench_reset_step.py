"""bench.reset_step: it times relearn's own reset step against a forward of the same model."""

import inspect

import pytest
import torch

import bench.reset_step as reset_step_bench
from submission.methods.relearn import relearn, reset_step


def test_the_bench_times_relearns_own_step_and_reports_its_ratio(monkeypatch):
    calls = []

    def spy(net, teacher, optimizer, batch, **kw):
        calls.append((len(batch[0]), kw))
        return reset_step(net, teacher, optimizer, batch, **kw)

    monkeypatch.setattr(reset_step_bench, "reset_step", spy)
    row = reset_step_bench.measure("smallcnn", 1, 8, batch=4, repeats=2, device=torch.device("cpu"))
    assert len(calls) == reset_step_bench.WARMUP + 2  # warm-up steps, then the timed ones
    defaults = inspect.signature(relearn).parameters
    settings = {n: defaults[n].default for n in ("distill_weight", "temperature")}
    assert calls[0] == (4, settings) and settings["distill_weight"] > 0  # the teacher runs too
    assert row["arch"] == "smallcnn" and row["shape"] == "1x8x8"
    assert row["forward_s"] > 0 and row["step_s"] > 0
    assert row["forwards_per_step"] == pytest.approx(row["step_s"] / row["forward_s"])
