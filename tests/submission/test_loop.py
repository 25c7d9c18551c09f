import math
import time
import types

import pytest
import torch

from submission.loop import (
    Deadline,
    Schedule,
    TrainLoop,
    cosine,
    one_cycle,
    record_timings,
    warmup_linear,
)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_deadline_counts_down_on_its_clock():
    clock = FakeClock()
    deadline = Deadline(10, clock=clock)
    clock.now += 4
    assert deadline.elapsed() == pytest.approx(4)
    assert deadline.remaining() == pytest.approx(6)
    assert Deadline(None).remaining() == math.inf


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "5"])
def test_deadline_refuses_a_non_positive_budget(bad):
    with pytest.raises(ValueError, match="budget_s"):
        Deadline(bad)


def test_cosine_and_warmup_shapes():
    assert cosine(0) == 1 and cosine(1) == pytest.approx(0) and cosine(0.5) == pytest.approx(0.5)
    shape = warmup_linear(0.2)
    assert shape(0.0) < 0.01 and shape(0.2) == pytest.approx(1) and shape(0.6) == pytest.approx(0.5)
    assert shape(1.0) == 0


def test_one_cycle_warms_up_linearly_then_decays_by_cosine():
    shape = one_cycle(0.25, start=0.04)
    assert shape(0.0) == pytest.approx(0.04)
    assert shape(0.125) == pytest.approx(0.52)  # half-way up: 0.04 + 0.96 / 2
    assert shape(0.25) == pytest.approx(1.0)
    assert shape(0.625) == pytest.approx(0.5)  # half-way down the cosine
    assert shape(1.0) == pytest.approx(0.0) and shape(2.0) == pytest.approx(0.0)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="warmup"):
            one_cycle(bad)


def test_schedule_runs_its_whole_shape_over_the_shortened_run():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = Schedule(opt, cosine, planned_steps=100)
    lrs = []
    for _ in range(10):  # the budget allowed 10% of the plan
        schedule.before_step(0.1)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[5] == pytest.approx(0.05)
    assert lrs == sorted(lrs, reverse=True)


def test_schedule_scale_base_scales_this_step_and_every_later_one():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    schedule = Schedule(opt, cosine, planned_steps=4)
    schedule.before_step(1.0)  # step 0, set before its rate was known
    schedule.scale_base(0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    schedule.before_step(1.0)  # step 1 of 4: cosine(0.25) of the halved base
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * cosine(0.25))


def test_unlimited_loop_runs_every_step():
    seen = []
    loop = TrainLoop(Deadline(None), planned_steps=7)
    assert loop.run(range(10), seen.append, steps=7) == 7
    assert seen == list(range(7)) and not loop.stopped


def test_loop_stops_when_the_batches_run_out():
    loop = TrainLoop(Deadline(None), planned_steps=7)
    assert loop.run(range(3), lambda b: None, steps=7) == 3


def test_loop_scales_every_phase_to_the_budget():
    """Steps of 20 ms, 200 planned (4 s): a 0.5 s budget runs a share of each phase."""
    loop = TrainLoop(Deadline(0.5), planned_steps=200, margin=0.8)
    start = time.perf_counter()
    per_phase = [loop.run(range(50), lambda b: time.sleep(0.02), steps=50) for _ in range(4)]
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5 + 0.05
    assert all(done >= 1 for done in per_phase), per_phase  # every phase got its share
    assert sum(per_phase) <= 25
    assert loop.fraction < 0.15


def test_full_phases_run_whole_and_the_scaled_ones_get_what_they_leave():
    """Steps of 20 ms; 4 forget phases of 3 steps run in full, 4 retain phases of 50 share the
    rest of a 0.8 s budget (the forget passes are cheap and do the forgetting)."""
    loop = TrainLoop(Deadline(0.8), planned_steps=4 * (3 + 50), full_steps=12, margin=0.8)
    start = time.perf_counter()
    full, scaled = [], []
    for _ in range(4):
        full.append(loop.run(range(3), lambda b: time.sleep(0.02), steps=3, full=True))
        scaled.append(loop.run(range(50), lambda b: time.sleep(0.02), steps=50))
    assert time.perf_counter() - start < 0.8 + 0.05
    assert full == [3, 3, 3, 3]
    assert all(done >= 1 for done in scaled) and sum(scaled) <= 28
    # the plain loop cuts the forget phases in proportion
    plain = TrainLoop(Deadline(0.8), planned_steps=4 * (3 + 50), margin=0.8)
    cut = []
    for _ in range(4):
        cut.append(plain.run(range(3), lambda b: time.sleep(0.02), steps=3))
        plain.run(range(50), lambda b: time.sleep(0.02), steps=50)
    assert sum(cut) < 12


def test_a_full_phases_schedule_is_not_compressed():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = Schedule(optimizer, cosine, planned_steps=4)
    loop = TrainLoop(Deadline(None), planned_steps=4, full_steps=4)
    loop.fraction = 0.25  # as if a budget had cut the scaled phases to a quarter
    lrs = []
    loop.run(range(4), lambda b: lrs.append(optimizer.param_groups[0]["lr"]), steps=4,
             schedules=(schedule,), full=True)  # fmt: skip
    assert lrs == pytest.approx([cosine(k / 4) for k in range(4)])


def test_full_steps_must_lie_within_the_plan():
    with pytest.raises(ValueError, match="full_steps must lie in"):
        TrainLoop(Deadline(None), planned_steps=3, full_steps=4)


def test_loop_never_starts_a_step_it_cannot_finish():
    loop = TrainLoop(Deadline(0.3), planned_steps=1, probe_steps=100)  # no scaling: backstop only
    start = time.perf_counter()
    done = loop.run(range(100), lambda b: time.sleep(0.05), steps=100)
    assert time.perf_counter() - start < 0.3 + 0.02
    assert 4 <= done <= 6 and loop.stopped


def test_timings_are_recorded_per_phase():
    def slow_batches():
        for i in range(4):
            time.sleep(0.02)
            yield i

    with record_timings() as timings:
        loop = TrainLoop(Deadline(None), planned_steps=4)
        loop.run(slow_batches(), lambda b: time.sleep(0.01), steps=4)
    assert timings.steps == 4 and timings.planned_steps == 4 and timings.loops == 1
    assert 0.08 <= timings.data_s < 0.2
    assert 0.04 <= timings.step_s < 0.15
    # Outside the block nothing is recorded.
    TrainLoop(Deadline(None), planned_steps=4).run(range(4), lambda b: None, steps=4)
    assert timings.steps == 4


def test_run_epochs_gives_each_epoch_fresh_batches_and_stops_once_cut():
    seen = []
    loop = TrainLoop(Deadline(None), planned_steps=9)
    loop.run_epochs(3, lambda: iter(range(3)), seen.append, steps=3)
    assert seen == [0, 1, 2] * 3

    started = []

    def batches():
        started.append(len(started))
        return iter(range(100))

    cut = TrainLoop(Deadline(0.3), planned_steps=1, probe_steps=100)  # backstop only
    cut.run_epochs(5, batches, lambda b: time.sleep(0.05), steps=100)
    assert cut.stopped and started == [0]  # the first epoch was cut; no later one started


def test_loop_is_calibrated_once_the_probe_steps_are_timed():
    seen = []
    loop = TrainLoop(Deadline(1.0), planned_steps=1000, probe_steps=3)

    def step(batch):
        seen.append((loop.calibrated, loop.fraction))
        time.sleep(0.01)

    loop.run(range(100), step, steps=100)  # this phase gets its share: about 8 steps
    assert [c for c, _ in seen[:4]] == [False, False, False, True]
    assert all(c for c, _ in seen[3:]) and len(seen) < 20
    assert seen[2][1] == 1.0  # nothing measured yet
    assert seen[3][1] < 0.2  # 1000 steps of 10 ms do not fit in 1 s
    assert 0.01 <= loop.fastest_step_s <= loop.seconds_per_step  # the quickest timed step
    # without a budget there is nothing to measure: calibrated from the first step
    assert TrainLoop(Deadline(None), planned_steps=10).calibrated


def test_loop_waits_for_a_gpu_each_step_only_when_a_budget_or_timings_need_it(monkeypatch):
    """A reference training lets the GPU run ahead of Python; the unlearning run it is
    compared with must too, unless its seconds per step are needed (faked GPU)."""
    from submission import loop as loop_module

    waits = []
    monkeypatch.setattr(loop_module, "synchronize", waits.append)
    gpu = torch.device("cuda")

    TrainLoop(Deadline(None), planned_steps=5, device=gpu).run(range(5), lambda b: 0, steps=5)
    assert waits == []
    TrainLoop(Deadline(100.0), planned_steps=5, device=gpu).run(range(5), lambda b: 0, steps=5)
    assert waits == [gpu] * 5
    with record_timings():
        TrainLoop(Deadline(None), planned_steps=3, device=gpu).run(range(3), lambda b: 0, steps=3)
    assert waits == [gpu] * 8


def test_warm_up_steps_once_per_device_and_process(monkeypatch):
    from submission import loop as loop_module

    steps = []
    monkeypatch.setattr(loop_module, "_WARMED", set())
    monkeypatch.setattr(loop_module, "_one_tiny_step", steps.append)
    loop_module.warm_up()
    assert steps == [] and loop_module._WARMED == {""}
    loop_module.warm_up("cpu")
    loop_module.warm_up(torch.device("cpu"))
    loop_module.warm_up("cuda:0")
    loop_module.warm_up("cuda:0")
    assert steps == [torch.device("cpu"), torch.device("cuda:0")]


def test_the_warm_up_step_leaves_the_random_stream_where_it_was():
    from submission.loop import _one_tiny_step

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    _one_tiny_step(torch.device("cpu"))  # a real step: initialises layers, Adam on the CPU
    assert torch.equal(torch.rand(3), expected)


def test_a_step_slower_than_the_average_still_ends_within_the_deadline(monkeypatch):
    """On a simulated clock: five 30 ms steps, then 36 ms ones, in a 185 ms budget. With 35 ms
    left after the fifth, the bare average (30 ms) would start a sixth that ends at 186 ms, past
    the deadline; a step starts only while STEP_RESERVE average steps (37.5 ms) remain."""
    from submission import loop as loop_module

    now = [0.0]
    monkeypatch.setattr(loop_module, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    durations = iter([0.03] * 5 + [0.036] * 10)

    def step(batch):
        now[0] += next(durations)

    loop = TrainLoop(Deadline(0.185, clock=lambda: now[0]), planned_steps=1, probe_steps=100)
    done = loop.run(range(100), step, steps=100)
    assert (done, loop.stopped) == (5, True) and now[0] == pytest.approx(0.15)
    assert loop_module.STEP_RESERVE * 0.03 > 0.185 - 0.15 > 0.03  # the case the rule is for
