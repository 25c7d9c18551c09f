"""Train K models of one architecture at once, from weights stacked along a model axis.

``train_new_models_batched(arch, data, val, recipe, num_classes=, device=, seeds=)`` returns
one :class:`~local_eval.training.train.TrainResult` per seed, like calling
:func:`~local_eval.training.train.train_new_model` once per seed, but each step runs all K models of
a group together (``stack_module_state``; one forward, one backward, one optimizer step),
which spends Python and kernel-launch overhead once per step instead of K times.

Two forward passes, chosen by the model's layer types (:func:`_batched_forward`):

- :func:`local_eval.training.batched_ops.stacked_forward` for an ``nn.Sequential`` of Conv2d /
  BatchNorm2d / ReLU / MaxPool2d / AdaptiveAvgPool2d / Identity / Flatten / Linear (the
  ``smallcnn``): the K models' activations are the channels of one channels-last batch,
  so every layer is one native kernel (grouped oneDNN convolution, BatchNorm over K*C
  channels). This is the fast path, several times the plain loop's models per minute on
  a CPU, most at 2 threads, where two groups train at once (see :func:`_lanes`); ``vmap``
  barely beats the plain loop there. ``python -m bench.batched_training`` measures the
  ratio (figures: docs/benchmarks.md);
- ``vmap`` over ``functional_call`` for anything else (ResNet-18, ...): general, but its
  CPU kernels are slow (see :mod:`local_eval.training.batched_ops`).

What is kept per model, exactly as the sequential trainer does it:

- initialisation: ``torch.manual_seed(seed)`` then ``build_model``;
- data order: a ``torch.Generator`` seeded with ``seed`` draws the epoch's permutation the
  way ``make_loader(shuffle=True, seed=seed)``'s ``RandomSampler`` does (two ``randperm``
  draws per epoch: the sampler draws an empty tail after every full pass), so model k sees
  the very batches its sequential run would;
- loss: each model's own mean cross-entropy (class-weighted when the recipe says so); the
  models' losses are summed, so each model's gradient is its own loss's gradient;
- optimizer and schedule: one ``torch.optim`` optimizer over the stacked tensors (its
  fused kernels, ``fused=True``: the same update). Adam and SGD (with coupled weight decay
  and momentum) are elementwise and every model takes the same steps at the same learning
  rate, so this is K independent optimizers;
- BatchNorm: the running statistics are stacked buffers, updated in place per model, each
  from its own batch only (momentum, unbiased variance, ``num_batches_tracked``).

At the end the stacked tensors are split back into ordinary ``state_dict``s, loaded with
``strict=True`` into the models built from the seeds, and returned in eval mode.

Differences from the sequential trainer: not bitwise equal, even for K = 1. The maths is
the same, but the kernels sum in other orders (grouped convolution, batched matmuls), so a
step's logits and gradients differ by float rounding (tests: within 1e-5, K = 1 and K = 3);
Adam amplifies that over 10 epochs to ~1e-2 in single weights (its early steps are about
``lr * sign(gradient)``), which is also why a model's weights depend on its group size at
that level (tests: K = 1 vs sequential within 2e-2 and >= 99% equal test predictions;
group sizes 4 / 3 / 1 >= 98% equal predictions; K = 4 mean test accuracy within 0.02 of the
sequential trainer's). The same seeds and group size repeat bitwise on a CPU (on a GPU,
cuDNN's and the max-pool backward's atomic adds make repeats differ by float rounding, as
they do for the sequential trainer there). ``TrainResult.seconds``
is the group's wall time divided by K (amortised), not the time one model takes alone.
Best-on-validation recipes keep, per model, the epoch the sequential trainer would keep (each
model's validation accuracy after every epoch from ``best_from_epoch`` on; the first best
wins). Augmentation recipes are refused (use the sequential trainer).
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from local_eval.data.setup import Split
from local_eval.training.batched_ops import stacked_forward, supports
from local_eval.training.models import build_model
from local_eval.training.signals import accuracy, model_logits
from local_eval.training.train import (
    Recipe,
    TrainResult,
    check_recipe,
    make_optimizer,
    make_scheduler,
)
from submission.devices import synchronize

__all__ = [
    "DEFAULT_GROUP",
    "TRAINERS",
    "check_batchable",
    "epoch_orders",
    "train_new_models_batched",
]

TRAINERS = ("sequential", "batched")
# Models per group. On digits (1 thread) 16 was as fast per model as 32 and faster than 8
# (bench/batched_training.py); a group's activations (~4 MB per layer at 16) grow linearly,
# and beyond the CPU caches the memory-bound layers slow down.
DEFAULT_GROUP = 16


def epoch_orders(n: int, seed: int, epochs: int) -> list[torch.Tensor]:
    """The ``epochs`` permutations of ``range(n)`` that ``make_loader(split, shuffle=True,
    seed=seed)`` yields over ``epochs`` passes (each pass also draws an empty tail)."""
    generator = torch.Generator().manual_seed(seed)
    orders = []
    for _ in range(epochs):
        orders.append(torch.randperm(n, generator=generator))
        torch.randperm(n, generator=generator)  # RandomSampler's (empty) remainder draw
    return orders


def train_new_models_batched(
    arch: str,
    data: Split,
    val: Split | None,
    recipe: Recipe,
    *,
    num_classes: int,
    device: torch.device | str,
    seeds: Sequence[int],
    group_size: int = DEFAULT_GROUP,
) -> list[TrainResult]:
    """One trained model per seed (in order), ``group_size`` models per vectorised run.

    On a CPU with ``torch.get_num_threads()`` = T >= 2 and several groups, up to T groups
    train at once, each in its own Python thread with single-threaded torch ops (see
    :func:`_lanes`); otherwise the groups run one after the other."""
    _check_batched(recipe, seeds, group_size)
    groups = [list(seeds[i : i + group_size]) for i in range(0, len(seeds), group_size)]

    def train(group: list[int]) -> list[TrainResult]:
        return _train_group(arch, data, val, recipe, num_classes, device, group)

    lanes = _lanes(len(groups), device)
    if lanes == 1:
        return [r for group in groups for r in train(group)]
    with _single_threaded_ops(), ThreadPoolExecutor(lanes, thread_name_prefix="batched") as pool:
        return [r for results in pool.map(train, groups) for r in results]


def _lanes(n_groups: int, device) -> int:
    """How many groups train at once. The small CNN's layers are too small for torch's
    intra-op threads to pay (on 2 cores, digits, groups of 16: 2 threads gave well under
    twice the models per minute of 1), while two groups on two cores, each single-threaded, run
    nearly independently (their kernels release the GIL; the step's Python code is a few
    per cent of it). So T threads become T lanes of one thread each. The models come out
    the same as when the groups run one after the other at one thread (deterministic, no
    shared state but the global RNG, which only model construction uses, under a lock)."""
    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), n_groups))


@contextlib.contextmanager
def _single_threaded_ops():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # process-wide: every lane's ops run on its own core
    try:
        yield
    finally:
        torch.set_num_threads(before)


_BUILD_LOCK = threading.Lock()  # seeding the global RNG and building must not interleave


def check_batchable(recipe: Recipe) -> None:
    """Raise ``ValueError`` unless the batched trainer can run ``recipe``."""
    check_recipe(recipe)
    if recipe.augment != "none":
        raise ValueError(
            "the batched trainer supports recipes without augmentation; "
            f"{recipe.name!r} has augment={recipe.augment!r} (use the sequential trainer)"
        )


def _check_batched(recipe: Recipe, seeds: Sequence[int], group_size: int) -> None:
    check_batchable(recipe)
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must be distinct (each model needs its own data order)")


def _train_group(arch, data, val, recipe, num_classes, device, seeds) -> list[TrainResult]:
    start = time.perf_counter()
    c, h = data.images.shape[1], data.images.shape[2]
    models = []
    with _BUILD_LOCK:
        for seed in seeds:  # as train_new_model: seed, then build
            torch.manual_seed(seed)
            models.append(build_model(arch, num_classes=num_classes, in_channels=c, image_size=h))
    models = [m.to(device) for m in models]
    stacked, buffers = stack_module_state(models)
    params = nn.ParameterDict({_safe(k): nn.Parameter(v.detach()) for k, v in stacked.items()})
    batched_forward = _batched_forward(copy.deepcopy(models[0]).to("meta").train())
    optimizer = make_optimizer(params, recipe, fused=True)
    steps_per_epoch = -(-len(data) // recipe.batch_size)
    scheduler = make_scheduler(optimizer, recipe, recipe.epochs * steps_per_epoch)
    weight = _class_weights(data.labels, num_classes).to(device) if recipe.class_weighted else None
    images, labels = data.images.to(device), data.labels.to(device)
    orders = [epoch_orders(len(data), s, recipe.epochs) for s in seeds]
    selecting = recipe.best_on_val and val is not None and len(val) > 0
    best = [(-math.inf, 0, None)] * len(seeds)  # per model: (val accuracy, epoch, state)

    for epoch in range(recipe.epochs):
        order = torch.stack([o[epoch] for o in orders]).to(device)  # (K, n)
        for i in range(0, len(data), recipe.batch_size):
            idx = order[:, i : i + recipe.batch_size]  # (K, b): each model's own batch
            named = {k: params[_safe(k)] for k in stacked}
            logits = batched_forward(named, buffers, images[idx])  # (K, b, classes)
            loss = _summed_loss(logits, labels[idx], weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        if selecting and epoch + 1 >= recipe.best_from_epoch:
            # as the sequential trainer: each model's epoch of best validation accuracy
            for k, model in enumerate(models):
                acc = _val_accuracy(_load(model, k, stacked, params, buffers), val, device)
                if acc > best[k][0]:
                    best[k] = (acc, epoch + 1, copy.deepcopy(model.state_dict()))

    synchronize(device)  # the group's queued GPU work is part of its time
    seconds = (time.perf_counter() - start) / len(seeds)
    results = []
    for k, model in enumerate(models):
        if best[k][2] is None:
            acc = _val_accuracy(_load(model, k, stacked, params, buffers), val, device)
            results.append(TrainResult(model, seconds, recipe.epochs, acc))
        else:
            model.load_state_dict(best[k][2])
            model.eval()
            results.append(TrainResult(model, seconds, best[k][1], float(best[k][0])))
    return results


def _batched_forward(template: nn.Module):
    """``forward(params, buffers, images [K, B, ...]) -> logits [K, B, classes]`` for K
    stacked copies of ``template`` (on the meta device: only its structure is read). The
    hand-written channels-last forward of :mod:`local_eval.training.batched_ops` when it covers
    every
    layer type of the model (the ``smallcnn``), else ``vmap`` over ``functional_call`` (any
    model, e.g. ResNet-18)."""
    if supports(template):
        return partial(stacked_forward, template)

    def forward(p, b, x):
        return functional_call(template, (p, b), (x,))

    return vmap(forward)


def _safe(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots


def _summed_loss(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None):
    """Sum over models of each model's mean cross-entropy (weighted mean with ``weight``),
    as ``F.cross_entropy(logits[k], y[k], weight=weight)`` computes it."""
    k, b, classes = logits.shape
    per = F.cross_entropy(logits.reshape(k * b, classes), y.reshape(-1), reduction="none")
    per = per.view(k, b)
    if weight is None:
        return per.mean(dim=1).sum()
    w = weight[y]  # (K, b)
    return ((per * w).sum(dim=1) / w.sum(dim=1)).sum()


def _class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    counts = torch.bincount(labels, minlength=n_classes).double()
    return torch.where(counts > 0, 1.0 / counts.clamp(min=1), 0.0).float()


def _load(model: nn.Module, k: int, stacked, params, buffers) -> nn.Module:
    """Model ``k``'s current weights and buffers loaded into ``model``, in eval mode."""
    state = {name: params[_safe(name)][k].detach().clone() for name in stacked}
    state.update({name: b[k].clone() for name, b in buffers.items()})
    model.load_state_dict(state, strict=True)
    return model.eval()


def _val_accuracy(model: nn.Module, val: Split | None, device) -> float:
    if val is None or not len(val):
        return float("nan")
    return float(accuracy(model_logits(model, val, device=device), val.labels.numpy()))
