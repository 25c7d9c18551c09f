"""The local evaluator: the competition's score, computed at home, exactly and fast.

The pipeline, one subpackage a stage: ``data`` (datasets, forget sets) -> ``training``
(models, recipes, trainers, the model cache) -> ``runs`` (where ``unlearning`` comes from,
the 4N jobs of an evaluation, backends, shards) -> ``scoring`` (the competition's score, pure
numpy) -> ``reporting`` (report files, plots, the leaderboard); ``cli`` holds the command
lines and ``common`` what every stage shares. The names a user needs:

>>> import numpy as np
>>> from local_eval import forget_quality, per_example_epsilons
>>> rng = np.random.default_rng(0)
>>> retrained = rng.uniform(size=(16, 5))   # (N models, E forget examples) confidences
>>> per_example_epsilons(retrained, retrained).tolist()   # identical groups: no separation
[0.0, 0.0, 0.0, 0.0, 0.0]
>>> forget_quality(retrained + 10.0, retrained)   # every model separable: no points
0.0

Why a score is low, per forget example (``diagnose``): runs that are the references moved up by
0.5 are off by 0.5 on every example, at the references' own spread.

>>> from local_eval import diagnose
>>> originals = rng.uniform(1.0, 2.0, size=(16, 5))   # models trained like the original
>>> d = diagnose(retrained + 0.5, retrained, originals)
>>> round(d["shift"], 6), round(d["mean_error"], 6), round(d["spread_ratio"], 6)
(0.5, 0.5, 1.0)

An evaluation of a method, end to end (digits, N = 2 models per group, 1 epoch per model):

>>> from local_eval import EvalConfig, load_unlearning, run_evaluation
>>> from local_eval.training.cache import ModelCache
>>> config = EvalConfig(n_models=2, recipe_overrides={"epochs": 1}, workers=1, budget_s=0.1)
>>> result = run_evaluation(
...     config, load_unlearning(method="finetune"), cache=ModelCache(None), progress=False
... )
>>> result.signals.unlearned.forget_logits.shape   # N runs x E forget examples x C classes
(2, 126, 10)
>>> from local_eval.reporting.report import confidences
>>> conf = confidences(result.signals)   # (N, E) per group: unlearned, retrained, ...
>>> 0.0 <= forget_quality(conf["unlearned"], conf["retrained"]) <= 1.0
True

``write_outputs(result, out, cache_root)`` writes the report a command line writes.
"""

from importlib import import_module

__all__ = [
    "EvalConfig",
    "diagnose",
    "forget_quality",
    "load_unlearning",
    "per_example_epsilons",
    "run_evaluation",
    "write_outputs",
]

# Imported on first use, so that ``import local_eval.scoring.metric`` (pure numpy) stays light.
_WHERE = {
    "EvalConfig": "local_eval.runs.pipeline",
    "run_evaluation": "local_eval.runs.pipeline",
    "load_unlearning": "local_eval.runs.loading",
    "write_outputs": "local_eval.reporting.outputs",
    "forget_quality": "local_eval.scoring.metric",
    "per_example_epsilons": "local_eval.scoring.metric",
    "diagnose": "local_eval.reporting.diagnosis",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'local_eval' has no attribute {name!r}")
    return getattr(import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
