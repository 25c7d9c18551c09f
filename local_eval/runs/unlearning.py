"""Run j of a submission: the one way the evaluator, the checkpoint runner
(``python -m submission.run``) and the profiler run ``unlearning`` once.

Run ``j`` of a setup always gets the seed ``model_seed(setup seed, "unlearning", j)``: the
global generators are seeded with it (``submission.seeding.seed_everything``) and the three
loaders' shuffling is seeded with it too, so its data order does not depend on what the
method draws from the global generator, nor on where or when the run happens. It starts
from a fresh model holding the original's weights, in eval mode, on the run's device.
Checkpoint j written by the runner is therefore the model the evaluator scores as run j.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from local_eval.common.errors import RunTimeout
from local_eval.data.setup import LOADER_BATCH, DataSetup, make_loader
from local_eval.runs.jobs import model_seed
from local_eval.runs.loading import LoadedMethod
from local_eval.training.models import build_model
from submission.devices import synchronize
from submission.seeding import seed_everything

__all__ = ["SubmissionError", "UnlearningRun", "run_seed", "unlearn"]

class SubmissionError(ValueError):
    """The evaluated ``unlearning`` raised, or returned something that cannot be scored."""


@dataclass(frozen=True)
class UnlearningRun:
    model: nn.Module  # what the run returned (or ``net``, when it returned None)
    seconds: float  # the call itself, the device's queue included
    seed: int


def run_seed(setup_seed: int, index: int) -> int:
    """The seed of run ``index`` of a setup seeded ``setup_seed``."""
    return model_seed(setup_seed, "unlearning", index)


def fresh_model(arch: str, setup: DataSetup, weights: Mapping, device) -> nn.Module:
    """``arch`` for ``setup``'s data holding ``weights``, on ``device``, in eval mode."""
    model = build_model(
        arch,
        num_classes=setup.num_classes,
        in_channels=setup.in_channels,
        image_size=setup.image_size,
    )
    model.load_state_dict(weights)
    return model.to(device).eval()


def unlearn(
    method: LoadedMethod,
    setup: DataSetup,
    *,
    arch: str,
    original: Mapping,
    index: int,
    device,
    budget_s: float | None,
    batch_size: int = LOADER_BATCH,
    where: str | None = None,
) -> UnlearningRun:
    """Run ``index`` of ``method`` from ``original`` (see the module docstring).

    A run that raises is a :class:`SubmissionError` (the user's exception as its cause); one
    interrupted by a time limit stays a :class:`RunTimeout`; both name the run (``where``).
    """
    seed = run_seed(setup.seed, index)
    where = where or f"unlearning run {index} (seed {seed})"
    net = fresh_model(arch, setup, original, device)
    seed_everything(seed)
    loaders = [
        make_loader(split, batch_size=batch_size, shuffle=True, seed=seed)
        for split in (setup.retain, setup.forget, setup.val)
    ]
    start = time.perf_counter()
    try:
        out = method(net, *loaders, budget_s=budget_s)
    except RunTimeout as exc:
        raise RunTimeout(f"{where} {exc}") from None
    except Exception as exc:
        raise SubmissionError(f"{where} raised {type(exc).__name__}: {exc}") from exc
    synchronize(device)  # the run's queued GPU work is part of its time
    seconds = time.perf_counter() - start
    return UnlearningRun(check_returned(out, net, original, where), seconds, seed)


def check_returned(out, net: nn.Module, original: Mapping, where: str) -> nn.Module:
    """The competition saves ``net.state_dict()`` and loads it into a fresh model, so the
    returned model (or ``net`` when ``None`` comes back) must have the original's weights'
    names and shapes."""
    model = net if out is None else out
    if not isinstance(model, nn.Module):
        raise SubmissionError(f"{where} returned a {type(out).__name__}, not a torch model")
    state = model.state_dict()
    wrong = [k for k, v in original.items() if k not in state or state[k].shape != v.shape]
    extra = [k for k in state if k not in original]
    if wrong or extra:
        first = (wrong or extra)[0]
        got = tuple(state[first].shape) if first in state else "missing"
        want = tuple(original[first].shape) if first in original else "absent"
        raise SubmissionError(
            f"{where} returned a model of another shape: {len(wrong)} weight(s) missing or "
            f"resized, {len(extra)} extra; e.g. {first!r}: {got} (original: {want})"
        )
    return model
