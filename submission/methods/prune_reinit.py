"""Prune and re-initialise: keep only the largest 1% of weights, retrain the rest on retain.

Recipe (4th place, NeurIPS 2023 Machine Unlearning competition; methods.md, after
Triantafillou et al. 2024, "Are we making progress in unlearning?"): prune 99% of the
Conv2d/Linear weights by magnitude, re-initialise the pruned entries, and fine-tune about
3 epochs on retain with cross-entropy plus a term matching the prediction entropy of the
original model.

Adapted: pruning is per layer (the smallest 99% of |w| in each weight tensor), re-initialised
entries are drawn from the layers' default initialisation (Kaiming uniform, a = sqrt(5)); the
entropy term is ``entropy_weight * mean (H(student(x)) - H(original(x)))**2`` on the retain
batch. The optimiser is not given in methods.md: SGD lr 1e-2 (99% of the weights are fresh),
momentum 0.9, weight decay 5e-4, cosine.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import count_batches, device_batches
from ..helpers import device_of, frozen_copy, layers_of_type
from ..loop import Deadline, Schedule, TrainLoop, cosine
from ..registry import register


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Prediction entropy per sample, ``(B, C) -> (B,)`` (nats)."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1)


@torch.no_grad()
def reinit_smallest(weight: torch.Tensor, fraction: float) -> None:
    """Replaces the ``fraction`` of entries with the smallest |w| by fresh default-init values."""
    k = round(fraction * weight.numel())
    if k == 0:
        return
    small = torch.topk(weight.abs().flatten(), k, largest=False, sorted=False).indices
    fresh = nn.init.kaiming_uniform_(torch.empty_like(weight), a=math.sqrt(5)).flatten()
    weight.view(-1)[small] = fresh[small]


@register("prune_reinit")
def prune_reinit(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    prune_fraction: float = 0.99,
    entropy_weight: float = 1.0,
    epochs: int = 3,
    lr: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    if not 0.0 <= prune_fraction <= 1.0:
        raise ValueError(f"prune_fraction must lie in [0, 1], got {prune_fraction}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = count_batches(retain)
    loop = TrainLoop(deadline, planned_steps=epochs * n_retain, device=device)
    original = frozen_copy(net)
    for layer in layers_of_type(net, nn.Conv2d, nn.Linear):
        reinit_smallest(layer.weight, prune_fraction)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    schedule = Schedule(optimizer, cosine, planned_steps=epochs * n_retain)

    def step(batch):
        x, y = batch
        with torch.no_grad():
            target = entropy(original(x))
        optimizer.zero_grad(set_to_none=True)
        logits = net(x)
        matching = (entropy(logits) - target).square().mean()
        loss = F.cross_entropy(logits, y) + entropy_weight * matching
        loss.backward()
        optimizer.step()
        return loss

    net.train()
    loop.run_epochs(
        epochs, lambda: device_batches(retain, device), step, steps=n_retain, schedules=(schedule,)
    )
    return net.eval()
