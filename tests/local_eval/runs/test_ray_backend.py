"""--backend ray on a local Ray instance: the same records as the local backend (same
seeds, bitwise), the submission's errors come back as themselves, notebook code travels to
the workers.

Ray is an optional extra (requirements-ray.txt). Without it these tests are reported as
skipped, except where ``KIT_TESTS_REQUIRE_RAY=1`` (CI sets it): there a missing ray fails.
"""

import os

import numpy as np
import pytest

from local_eval.runs.loading import LoadedMethod, load_unlearning
from local_eval.runs.pipeline import EvalConfig, SubmissionError, run_evaluation
from local_eval.training.cache import ModelCache
from local_eval.training.signals import GROUPS
from tests.local_eval.runs.test_loading import write_notebook

if os.environ.get("KIT_TESTS_REQUIRE_RAY") == "1":
    import ray
else:
    ray = pytest.importorskip("ray", reason="optional: pip install -r requirements-ray.txt")

pytestmark = pytest.mark.slow  # a Ray instance takes seconds to start


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    """One local instance for the module (the backend uses a running one, else starts and
    stops its own per evaluation)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def evaluate(method, **config):
    config = EvalConfig(n_models=2, recipe_overrides={"epochs": 1}, workers=1, threads=1,
                        budget_s=None, **config)  # records compared bitwise: no clock  # fmt: skip
    return run_evaluation(config, method, cache=ModelCache(None), progress=False)


@pytest.mark.parametrize("trainer", ["sequential", "batched"])
def test_ray_tasks_give_the_local_backends_records(trainer):
    method = load_unlearning(method="finetune")
    local = evaluate(method, trainer=trainer)
    remote = evaluate(method, trainer=trainer, backend="ray")
    assert remote.device == "cpu" and remote.trained == local.trained
    for group in GROUPS:
        a, b = getattr(local.signals, group), getattr(remote.signals, group)
        assert np.array_equal(a.seeds, b.seeds)
        assert np.array_equal(a.forget_logits, b.forget_logits), group
        assert np.array_equal(a.test_losses, b.test_losses), group
        assert np.all(b.seconds > 0)


def test_a_failing_submission_fails_the_same_way_on_ray():
    def broken(net, retain, forget, val):
        raise RuntimeError("boom on a worker")

    method = LoadedMethod(broken, "test:broken", accepts_budget=False)
    with pytest.raises(SubmissionError, match=r"run [12]/2 \(seed \d+\) raised RuntimeError: boom"):
        evaluate(method, backend="ray")


def test_notebook_definitions_reach_the_workers(tmp_path):
    path = write_notebook(
        tmp_path / "nb.ipynb",
        "def unlearning(net, retain, forget, val):\n    return net\n",
        "for i in range(512):\n    save_checkpoint(i)\n",  # never runs
    )
    result = evaluate(load_unlearning(notebook=path), backend="ray")
    signals = result.signals  # untouched: every run is the original, floor model 0
    for run in signals.unlearned.forget_logits:
        assert np.array_equal(run, signals.floor.forget_logits[0])


def test_gpu_tasks_get_a_fresh_worker_each_and_cpu_tasks_reuse_theirs():
    """A reused worker would keep its first task's GPU (CUDA reads CUDA_VISIBLE_DEVICES once
    per process); the options must reach Ray as a decorator's, where max_calls is allowed."""
    from local_eval.runs.ray_backend import _run, task_options

    assert task_options(2, 0.0) == {"num_cpus": 2, "num_gpus": 0.0}
    assert task_options(1, 0.5) == {"num_cpus": 1, "num_gpus": 0.5, "max_calls": 1}
    remote = ray.remote(**task_options(1, 0.5))(_run)
    assert remote._default_options["max_calls"] == 1
    assert ray.remote(**task_options(2, 0.0))(_run)._default_options.get("max_calls") in (None, 0)
