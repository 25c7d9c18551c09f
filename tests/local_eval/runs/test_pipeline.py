"""End-to-end checks of the evaluation on digits with the small CNN (small N, shared cache)."""

import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from local_eval.reporting.report import build_report
from local_eval.runs import pipeline, unlearning
from local_eval.runs.loading import LoadedMethod, load_unlearning
from local_eval.runs.pipeline import EvalConfig, SubmissionError, run_evaluation
from local_eval.training.cache import ModelCache
from local_eval.training.signals import ModelRecord
from local_eval.training.train import CUTOFF, RECIPES, train_model

QUICK = {"epochs": 5}  # half the fast recipe: still memorises the forget set, twice as fast


def oracle(net, retain, forget, val):
    """Retrains from scratch on retain with the references' recipe: the perfect unlearner."""
    for module in net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    seed = int(torch.randint(0, 2**31 - 1, ()))  # from the run's seed_everything
    recipe = dataclasses.replace(RECIPES["fast_smallcnn"], **QUICK)
    train_model(net, retain, None, recipe, device="cpu", seed=seed)
    return net


def untouched(net, retain, forget, val):
    return net


def method(fn) -> LoadedMethod:
    return LoadedMethod(fn, f"test:{fn.__name__}", accepts_budget=False)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> ModelCache:
    return ModelCache(tmp_path_factory.mktemp("model-cache"))


@pytest.fixture
def count_training(monkeypatch):
    calls = []
    real = pipeline.train_new_model

    def counting(*args, **kwargs):
        calls.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_new_model", counting)
    return calls


def evaluate(fn, cache, n=8, workers=1, threads=1, **config):
    result = run_evaluation(
        EvalConfig(n_models=n, workers=workers, threads=threads, **config),
        method(fn),
        cache=cache,
        progress=False,
    )
    return result, build_report(result.signals)[0]


@pytest.mark.slow
def test_scores_order_untouched_finetune_oracle(shared_cache):
    """N = 8 on digits; measured F: untouched 0.0, finetune 0.018, oracle 0.187, ceiling
    0.182, floor 0.177 (at N = 8 the floor is barely below the ceiling: too few models for
    the attack to separate differently-seeded originals; the N = 32 main job shows the gap)."""
    finetune = load_unlearning(method="finetune").fn
    reports = {
        fn.__name__: evaluate(fn, shared_cache, recipe_overrides=QUICK)[1]
        for fn in (untouched, finetune, oracle)
    }
    untouched_report, finetune_report, oracle_report = reports.values()
    assert untouched_report["forget_quality"] == 0.0  # N identical copies: collapsed
    ceiling = oracle_report["ceiling"]["forget_quality"]
    assert abs(oracle_report["forget_quality"] - ceiling) < 0.05
    assert oracle_report["score"] == pytest.approx(oracle_report["forget_quality"], abs=0.02)
    assert 0.0 < finetune_report["forget_quality"] < oracle_report["forget_quality"]
    forget_acc = {k: r["accuracy"]["unlearned"]["forget"]["mean"] for k, r in reports.items()}
    assert forget_acc["oracle"] < forget_acc["untouched"]


@pytest.mark.slow
def test_cache_rerun_trains_nothing_and_more_models_train_only_the_missing(
    tmp_path, count_training
):
    cache = ModelCache(tmp_path)
    first, first_report = evaluate(untouched, cache, n=3, recipe_overrides={"epochs": 3})
    assert first.trained == {"original": 3, "retrained": 6}
    assert len(count_training) == 9
    count_training.clear()

    again, again_report = evaluate(untouched, cache, n=3, recipe_overrides={"epochs": 3})
    assert count_training == [] and again.trained == {"original": 0, "retrained": 0}
    assert np.array_equal(
        again.signals.retrained.forget_logits, first.signals.retrained.forget_logits
    )
    assert np.array_equal(
        again.signals.unlearned.forget_logits, first.signals.unlearned.forget_logits
    )
    for key in ("score", "forget_quality", "ceiling", "floor", "accuracy"):
        assert again_report[key] == first_report[key]

    more, _ = evaluate(untouched, cache, n=4, recipe_overrides={"epochs": 3})
    assert more.trained == {"original": 1, "retrained": 2}  # 4 + 4 references exist: 8 - 6
    assert len(count_training) == 3

    other, _ = evaluate(untouched, cache, n=3, recipe_overrides={"epochs": 2})
    assert other.trained == {"original": 3, "retrained": 6}  # another recipe: other models


def test_runs_are_seeded_and_start_from_the_original(tmp_path):
    starts = []

    def record_start(net, retain, forget, val):
        starts.append((next(iter(net.parameters())).detach().clone(), torch.rand(())))
        return net

    cache = ModelCache(tmp_path)
    evaluate(record_start, cache, n=2, recipe_overrides={"epochs": 1})
    evaluate(record_start, cache, n=2, recipe_overrides={"epochs": 1})
    (w0, r0), (w1, r1), (w0b, r0b), _ = starts
    assert torch.equal(w0, w1)  # every run starts from the same original weights
    assert r0 != r1  # ... with its own seed
    assert torch.equal(w0, w0b) and r0 == r0b  # reproducibly


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda net, r, f, v: 1 / 0, r"run 1/2 \(seed \d+\) raised ZeroDivisionError"),
        (lambda net, r, f, v: torch.nn.Linear(3, 3), "returned a model of another shape"),
        (lambda net, r, f, v: "done", "returned a str, not a torch model"),
    ],
)
def test_broken_submissions_fail_before_any_reference_is_trained(
    tmp_path, count_training, fn, message
):
    with pytest.raises(SubmissionError, match=message):
        evaluate(fn, ModelCache(tmp_path), n=2, recipe_overrides={"epochs": 1})
    assert len(count_training) == 1  # the original only


def test_nan_logits_are_refused(tmp_path):
    def poison(net, retain, forget, val):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(float("nan"))
        return net

    with pytest.raises(SubmissionError, match="NaN/inf logits on 126 of 126"):
        evaluate(poison, ModelCache(tmp_path), n=2, recipe_overrides={"epochs": 1})


def test_config_checks():
    with pytest.raises(ValueError, match="n_models must be at least 2"):
        EvalConfig(n_models=1)
    with pytest.raises(ValueError, match="budget_s must be positive"):
        EvalConfig(budget_s=0)
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        EvalConfig(threads=0)
    assert pipeline.resolve_threads(3, workers=1) == 3
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            pipeline.resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        pipeline.resolve_device("gpu0")


@pytest.mark.slow
def test_worker_processes_train_the_same_models(tmp_path):
    """Models trained by spawned workers equal those trained in this process (same seeds,
    same thread count), so the cache does not depend on --workers."""
    quick = {"epochs": 1}
    serial = run_evaluation(
        EvalConfig(n_models=2, recipe_overrides=quick, workers=1, threads=1),
        method(untouched),
        cache=ModelCache(tmp_path / "a"),
        progress=False,
    )
    parallel = run_evaluation(
        EvalConfig(n_models=2, recipe_overrides=quick, workers=2, threads=1),
        method(untouched),
        cache=ModelCache(tmp_path / "b"),
        progress=False,
    )
    assert parallel.trained == serial.trained == {"original": 2, "retrained": 4}
    for group in ("retrained", "ceiling", "floor"):
        a, b = getattr(serial.signals, group), getattr(parallel.signals, group)
        assert np.array_equal(a.seeds, b.seeds)
        np.testing.assert_allclose(a.forget_logits, b.forget_logits, rtol=1e-5, atol=1e-5)


def test_an_unlearning_run_is_timed_to_the_end_of_its_device_work(monkeypatch):
    """Warm-up before the clock starts, the device's queue drained before it stops (on a
    GPU the method returns while its kernels still run)."""
    import types

    from local_eval.data.setup import load_setup
    from local_eval.training.models import build_model

    setup = load_setup("digits")
    events = []
    ticks = iter(range(10, 100, 10))

    def clock():
        events.append("clock")
        return float(next(ticks))

    def fn(net, retain, forget, val):
        events.append("method")
        return net

    monkeypatch.setattr(pipeline, "warm_up", lambda device: events.append(f"warm {device}"))
    monkeypatch.setattr(unlearning, "synchronize", lambda device: events.append(f"sync {device}"))
    monkeypatch.setattr(unlearning, "time", types.SimpleNamespace(perf_counter=clock))
    net = build_model("smallcnn", num_classes=10, in_channels=1, image_size=8)
    record = pipeline.unlearning_run(
        setup,
        method=method(fn),
        original=net.state_dict(),
        arch="smallcnn",
        index=0,
        n=1,
        device="cpu",
        budget_s=None,
    )
    assert events == ["warm cpu", "clock", "method", "sync cpu", "clock"]
    assert record.seconds == 10.0


def test_models_trained_on_a_gpu_are_cached_apart_from_cpu_ones(tmp_path):
    import types

    from local_eval.data.setup import load_setup

    setup = load_setup("digits")
    cache = ModelCache(tmp_path)

    def key(device, trainer="sequential"):
        backend = types.SimpleNamespace(device=torch.device(device))
        source = pipeline._ModelSource(
            setup, "smallcnn", RECIPES["fast_smallcnn"], cache, backend, False, trainer
        )
        return source.key("retrained", trainer)

    assert key("cpu") != key("cuda")
    assert key("cuda:1") == key("cuda")  # the kind of device, not which one
    assert len({key("cpu"), key("cuda"), key("cpu", "batched"), key("cuda", "batched")}) == 4


def test_the_default_budget_is_the_competitions_rule(tmp_path):
    """auto: each run gets 20% of the original's own training seconds (read from the cache)."""
    from local_eval.runs.jobs import model_seed
    from local_eval.runs.pipeline import AUTO_BUDGET, resolve_budget
    from local_eval.training.train import CUTOFF

    budgets = []

    def records_its_budget(net, retain, forget, val, *, budget_s=None):
        budgets.append(budget_s)
        return net

    config = EvalConfig(n_models=2, recipe_overrides={"epochs": 1}, workers=1, threads=1)
    assert config.budget_s == AUTO_BUDGET
    cache = ModelCache(tmp_path)
    loaded = LoadedMethod(records_its_budget, "test:budget", accepts_budget=True)
    result = run_evaluation(config, loaded, cache=cache, progress=False)
    metas = {p.name: json.loads((p / "meta.json").read_text()) for p in tmp_path.iterdir()
             if (p / "meta.json").exists()}  # fmt: skip
    [key] = [k for k, m in metas.items() if '"original"' in json.dumps(m)]
    original = cache.load(key, model_seed(0, "original", 0))
    assert original is not None and original.seconds > 0
    assert result.config.budget_s == pytest.approx(CUTOFF * original.seconds)
    assert budgets == [result.config.budget_s] * 2  # every run got it
    assert resolve_budget(config, cache=cache, progress=False).budget_s == result.config.budget_s
    assert resolve_budget(dataclasses.replace(config, budget_s=3.0), cache=cache).budget_s == 3.0


def test_a_retimed_budget_times_the_originals_training_again_and_is_the_yardstick(tmp_path):
    """retime: 20% of the original's training done again when the evaluation starts; its
    seconds become the report's one retraining, and the cached original stays as it was."""
    from local_eval.runs.jobs import model_seed
    from local_eval.runs.pipeline import RETIME_BUDGET, resolve_budget
    from local_eval.training.train import CUTOFF

    budgets = []

    def records_its_budget(net, retain, forget, val, *, budget_s=None):
        budgets.append(budget_s)
        return net

    loaded = LoadedMethod(records_its_budget, "test:budget", accepts_budget=True)
    config = EvalConfig(n_models=2, recipe_overrides={"epochs": 1}, workers=1, threads=1)
    cache = ModelCache(tmp_path)
    cold = run_evaluation(  # the original trained now: its training one of the timings
        dataclasses.replace(config, budget_s=RETIME_BUDGET), loaded, cache=cache, progress=False
    )
    metas = {p.name: json.loads((p / "meta.json").read_text()) for p in tmp_path.iterdir()
             if (p / "meta.json").exists()}  # fmt: skip
    [key] = [k for k, m in metas.items() if '"original"' in json.dumps(m)]
    cached = cache.load(key, model_seed(0, "original", 0)).seconds
    assert cold.config.retraining_s > 0
    assert cold.config.budget_s == pytest.approx(CUTOFF * cold.config.retraining_s)
    assert cold.trained["original"] == 2  # the original and the floor's second model

    warm = run_evaluation(
        dataclasses.replace(config, budget_s=RETIME_BUDGET), loaded, cache=cache, progress=False
    )
    retimed = warm.config.retraining_s
    assert retimed > 0 and retimed != cached  # a second timing of the same training
    assert warm.config.budget_s == pytest.approx(CUTOFF * retimed)
    assert budgets[-2:] == [warm.config.budget_s] * 2
    assert float(warm.signals.floor.seconds[0]) == retimed  # the yardstick, timed now
    assert cache.load(key, model_seed(0, "original", 0)).seconds == cached  # not overwritten
    assert warm.trained["original"] == 0  # the retiming is not a model of the evaluation
    again = resolve_budget(dataclasses.replace(config, budget_s=RETIME_BUDGET), cache=cache)
    assert again.budget_s == pytest.approx(CUTOFF * again.retraining_s)


def test_a_retimed_budget_takes_the_median_timing_so_one_slow_training_does_not_set_it(
    tmp_path, monkeypatch
):
    from local_eval.runs import pipeline
    from local_eval.runs.pipeline import RETIME_BUDGET, RETIME_TIMINGS, resolve_budget

    config = EvalConfig(n_models=2, recipe_overrides={"epochs": 1}, workers=1, threads=1)
    cache = ModelCache(tmp_path)
    resolve_budget(config, cache=cache, progress=False)  # the original, trained and cached
    train, timings, calls = pipeline._ModelSource._train_many, iter([0.5, 9.0, 0.6]), []

    def timed(self, jobs, **kw):  # the real training, its seconds replaced by the ones above
        calls.append(list(jobs))
        for job, (record, weights) in train(self, jobs, **kw):
            yield job, (dataclasses.replace(record, seconds=next(timings)), weights)

    monkeypatch.setattr(pipeline._ModelSource, "_train_many", timed)
    retimed = resolve_budget(dataclasses.replace(config, budget_s=RETIME_BUDGET), cache=cache)
    trainings = [jobs for jobs in calls if jobs]  # (the cache's lookup asks for nothing)
    assert RETIME_TIMINGS == 3 and len(trainings) == 3  # one per call, one after another
    assert all(len(jobs) == 1 and jobs[0][0] == "original" for jobs in trainings)
    assert retimed.retraining_s == 0.6  # not 9.0, the slow one, nor the mean 3.37
    assert retimed.budget_s == pytest.approx(0.12)


@pytest.mark.parametrize("bad", ["fast", -1.0, 0.0, float("nan")])
def test_a_budget_is_auto_retime_none_or_positive_seconds(bad):
    with pytest.raises(
        ValueError, match="budget_s must be positive seconds, 'auto', 'retime' or None"
    ):
        EvalConfig(budget_s=bad)
    assert EvalConfig(budget_s=None).budget_s is None
    assert EvalConfig(budget_s="retime").budget_s == "retime"
    with pytest.raises(ValueError, match="retraining_s must be positive seconds or None"):
        EvalConfig(retraining_s=0.0)


def test_the_run_time_limit_follows_each_runs_budget():
    from local_eval.runs.loading import PER_BUDGET, with_time_limit

    limited = with_time_limit(method(untouched), PER_BUDGET)
    assert limited.time_limit_s(2.0) == 80.0 and limited.time_limit_s(None) is None
    assert with_time_limit(method(untouched), 5.0).time_limit_s(2.0) == 5.0
    assert method(untouched).time_limit_s(2.0) is None
    with pytest.raises(ValueError, match="must be positive seconds"):
        with_time_limit(method(untouched), 0)


def test_a_stage_entered_twice_reports_both_times():
    # run_shard enters "original" for the auto budget and again for the weights: the
    # second (a cache read) must not overwrite the first (the training)
    stages = {}
    with pipeline._stage(stages, "original"):
        time.sleep(0.05)
    with pipeline._stage(stages, "original"):
        pass
    assert stages["original"] >= 0.05


def test_the_original_is_trained_alone_before_the_other_models(tmp_path):
    # wherever records() meets a missing original (model 0), it is trained in a call of its
    # own, by the sequential trainer, before the others are trained together
    import types

    from local_eval.data.setup import load_setup

    backend = types.SimpleNamespace(device=torch.device("cpu"), workers=1, map=None)
    recipe = dataclasses.replace(RECIPES["fast_smallcnn"], epochs=1)
    source = pipeline._ModelSource(
        load_setup("digits"), "smallcnn", recipe, ModelCache(tmp_path), backend, False, "batched"
    )
    calls = []

    def fake_train_many(jobs, *, weights=False):
        calls.append(list(jobs))
        for job in jobs:
            record = ModelRecord(
                forget_logits=np.zeros((3, 10), np.float32), test_losses=np.zeros(4, np.float32),
                retain_accuracy=1.0, test_accuracy=1.0, forget_accuracy=1.0,
                seconds=float(len(calls)),
            )  # fmt: skip
            yield job, (record, {"w": torch.zeros(1)} if weights else None)

    source._train_many = fake_train_many
    records = source.records({"original": [0, 1, 2], "retrained": [0]})
    seeds = [source.seed("original", i) for i in range(3)]
    assert calls[0] == [("original", "sequential", seeds[0])]
    assert calls[1] == [
        ("original", "batched", seeds[1]),
        ("original", "batched", seeds[2]),
        ("retrained", "batched", source.seed("retrained", 0)),
    ]
    assert records[pipeline.Job("original", 0)].seconds == 1.0  # its own call's record
    assert records[pipeline.Job("original", 1)].seconds == 2.0


@pytest.mark.slow
def test_the_floors_model_0_is_the_runs_original_unless_one_is_given(shared_cache, tmp_path):
    """What the report's diagnosis relies on: without ``original``, runs that change nothing
    give exactly the floor's model 0's confidences, so they keep all of the originals'
    memorisation and all of their original's own deviation."""
    result, _ = evaluate(untouched, shared_cache, n=4, recipe_overrides=QUICK)
    signals = result.signals
    assert pipeline.original_is_floor_model(result)
    for logits in signals.unlearned.forget_logits:
        assert np.array_equal(logits, signals.floor.forget_logits[0])
    diagnosis = build_report(signals, original_in_floor=True)[0]["diagnosis"]["unlearned"]
    assert diagnosis["kept_memorisation"] == pytest.approx(1.0)
    assert diagnosis["kept_own"] == pytest.approx(1.0)
    assert diagnosis["unexplained"] == pytest.approx(0.0, abs=1e-6)
    assert diagnosis["spread_ratio"] == 0.0  # one model, N times

    from local_eval.training.models import build_model

    given = tmp_path / "given.pth"
    net = build_model("smallcnn", num_classes=10, in_channels=1, image_size=8)
    torch.save(net.state_dict(), given)
    config = dataclasses.replace(result.config, original=str(given))
    assert not pipeline.original_is_floor_model(dataclasses.replace(result, config=config))


def test_checkpoints_of_a_competition_folder_start_from_its_own_original(tmp_path):
    import types

    (tmp_path / "original_model.pth").write_bytes(b"")
    config = EvalConfig(dataset=f"kaggle:{tmp_path}")

    def result(kind):
        return types.SimpleNamespace(config=config, method={"identity": {"kind": kind}})

    assert not pipeline.original_is_floor_model(result("checkpoints"))  # the folder's own
    assert pipeline.original_is_floor_model(result("kit"))  # runs start from the recipe's
    (tmp_path / "original_model.pth").unlink()
    assert pipeline.original_is_floor_model(result("checkpoints"))


def test_original_model_is_the_model_every_run_starts_from(tmp_path, count_training):
    starts = []

    def record_start(net, retain, forget, val):
        starts.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        return net

    cache = ModelCache(tmp_path)
    result, _ = evaluate(record_start, cache, n=2, recipe_overrides={"epochs": 1})
    trained = len(count_training)
    reads = []
    load_weights = cache.load_weights
    cache.load_weights = lambda *a, **kw: reads.append(a) or load_weights(*a, **kw)
    net, setup, seconds = pipeline.original_model(result.config, cache=cache, progress=False)
    assert len(count_training) == trained  # read back from the cache, not trained again
    assert len(reads) == 1  # its weights and its seconds come from one read
    assert not net.training and setup.describe() == result.data
    state = net.state_dict()
    assert state.keys() == starts[0].keys()
    assert all(torch.equal(state[k], starts[0][k]) for k in state)
    # its seconds are the ones the auto budget takes 20% of
    auto = pipeline.resolve_budget(dataclasses.replace(result.config, budget_s="auto"), cache=cache)
    assert auto.budget_s == pytest.approx(CUTOFF * seconds) and seconds > 0
