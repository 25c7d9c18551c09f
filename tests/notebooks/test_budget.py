"""The notebook's per-run budget, simulated with a fake clock: every run ends in time."""

import ast
import types

import pytest

from notebooks.build import TEMPLATE


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def time(self):
        return self.now


def load_run_budget(clock):
    """``RunBudget`` from the template, bound to ``clock`` instead of the real time module."""
    tree = ast.parse(TEMPLATE.read_text())
    keep = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RunBudget"]
    namespace = {"time": types.SimpleNamespace(time=clock.time), "MIN_BUDGET_S": 1.0}
    exec(compile(ast.Module(keep, type_ignores=[]), "template", "exec"), namespace)
    return namespace["RunBudget"]


def simulate(n_runs, deadline, *, overrun, fixed_s, overhead_s, first_extra_s=0.0):
    """Runs that take ``overrun * granted + fixed_s`` (+ ``first_extra_s`` once) seconds of
    unlearning plus ``overhead_s`` of loading/saving; returns (granted list, end time)."""
    clock = FakeClock()
    budget = load_run_budget(clock)(deadline, n_runs)
    granted = []
    for i in range(n_runs):
        start = clock.now
        clock.now += overhead_s / 2  # loading the original model
        g = budget.next_budget()
        unlearn_s = overrun * g + fixed_s + (first_extra_s if i == 0 else 0.0)
        clock.now += unlearn_s + overhead_s / 2  # unlearning, then saving
        budget.record(granted_s=g, unlearn_s=unlearn_s, total_s=clock.now - start)
        granted.append(g)
    return granted, clock.now


def test_exact_method_uses_the_time_evenly():
    granted, end = simulate(100, 1000.0, overrun=1.0, fixed_s=0.0, overhead_s=1.0)
    assert end <= 1000.0 + 1e-6
    assert granted[-1] == pytest.approx(9.0, rel=0.02)  # 10 s per run minus 1 s overhead


@pytest.mark.parametrize(("overrun", "fixed_s", "first_extra_s"), [
    (1.3, 0.0, 0.0),  # a method that always overshoots by 30%
    (1.0, 3.0, 0.0),  # a fixed cost the method does not count
    (1.0, 0.0, 60.0),  # a slow first run (CUDA warm-up)
])
def test_overshooting_methods_still_finish_by_the_deadline(overrun, fixed_s, first_extra_s):
    granted, end = simulate(200, 2000.0, overrun=overrun, fixed_s=fixed_s, overhead_s=0.5,
                            first_extra_s=first_extra_s)
    share = 2000.0 / 200
    assert end <= 2000.0 + 0.5 * share  # at most part of one run's share past the deadline
    assert min(granted) >= 1.0
    assert granted[len(granted) // 2] > 0.5 * share  # budgets adapt, they do not collapse
