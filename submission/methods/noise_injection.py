"""Noise injection: reset the classifier, retrain on retain with noisy random layer subsets.

Recipe (7th place, NeurIPS 2023 Machine Unlearning competition; methods.md, after
Triantafillou et al. 2024, "Are we making progress in unlearning?"): re-initialise the
classifier, then 9 epochs on retain where the early epochs train only a random subset of the
layers, with Gaussian noise injected into some of them.

Adapted (methods.md gives the outline only): the first ``noisy_epochs`` (3) epochs each draw
a fresh random ``train_fraction`` (half) of the layers with parameters (Conv2d, Linear,
BatchNorm; the classifier always trains); the others are frozen. At the start of such an
epoch a random ``noise_fraction`` (half) of the trained Conv2d/Linear layers get
``N(0, (noise_scale * std(w))**2)`` added to their weights (noise_scale 0.1). Later epochs train
every layer. CE on retain, SGD lr 1e-2, momentum 0.9, weight decay 5e-4, cosine over the 9
epochs. Frozen layers get no gradient, hence no momentum or decay step.
"""

import torch
from torch import nn

from ..batches import count_batches, device_batches
from ..helpers import cross_entropy_step, device_of, last_linear, layers_of_type
from ..loop import Deadline, Schedule, TrainLoop, cosine
from ..registry import register

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def random_subset(items: list, fraction: float) -> list:
    """``round(fraction * len(items))`` of ``items`` (at least one unless ``fraction`` is 0),
    drawn with torch's generator."""
    k = min(len(items), max(int(fraction > 0), round(fraction * len(items))))
    return [items[i] for i in torch.randperm(len(items))[:k].tolist()]


@torch.no_grad()
def perturb(layers: list[nn.Module], scale: float) -> None:
    """Adds Gaussian noise of ``scale`` times each weight's standard deviation."""
    for layer in layers:
        w = layer.weight
        w.add_(torch.randn_like(w) * (scale * w.std()))


@register("noise_injection")
def noise_injection(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    epochs: int = 9,
    noisy_epochs: int = 3,
    train_fraction: float = 0.5,
    noise_fraction: float = 0.5,
    noise_scale: float = 0.1,
    lr: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    for name, value in (("train_fraction", train_fraction), ("noise_fraction", noise_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = count_batches(retain)
    loop = TrainLoop(deadline, planned_steps=epochs * n_retain, device=device)
    head = last_linear(net)
    head.reset_parameters()
    layers = [m for m in layers_of_type(net, nn.Conv2d, nn.Linear, *_NORMS) if m is not head]
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    schedule = Schedule(optimizer, cosine, planned_steps=epochs * n_retain)
    trainable = {p: p.requires_grad for p in net.parameters()}

    step = cross_entropy_step(net, optimizer)

    net.train()
    try:
        for epoch in range(epochs):
            if loop.stopped:
                break
            chosen = random_subset(layers, train_fraction) if epoch < noisy_epochs else layers
            for layer in layers:
                layer.requires_grad_(False)
            for layer in chosen:
                for p in layer.parameters():
                    p.requires_grad_(trainable[p])
            if epoch < noisy_epochs:
                weighted = [m for m in chosen if isinstance(m, (nn.Conv2d, nn.Linear))]
                if weighted:
                    perturb(random_subset(weighted, noise_fraction), noise_scale)
            loop.run(device_batches(retain, device), step, steps=n_retain, schedules=(schedule,))
    finally:
        for p, flag in trainable.items():
            p.requires_grad_(flag)
    return net.eval()
