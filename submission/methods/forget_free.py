"""Forget-free: forget-remember cycles of random re-initialisation and output matching on retain.

Recipe (9th place, NeurIPS 2023 Machine Unlearning competition; methods.md, after
Triantafillou et al. 2024, "Are we making progress in unlearning?"; the same idea as the
8th-place write-up of Ahn et al.): a few cycles, each re-initialising a random subset of the
layers and then training the network to reproduce the original model's outputs (MSE on the
logits) on retain images with Gaussian noise added; the share of re-initialised layers grows
from cycle to cycle. The forget set is never read.

Adapted (methods.md gives the outline only): three cycles re-initialising 10%, 20% and 30% of
the Conv2d/Linear layers (``reinit_fractions``, at least one layer each), one retain epoch per
cycle, image noise ``N(0, 0.1**2)`` drawn afresh for every batch (both models see the same
noisy images), SGD lr 1e-2, momentum 0.9, weight decay 5e-4, a fresh optimiser with a cosine
schedule per cycle.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import count_batches, device_batches
from ..helpers import device_of, frozen_copy, layers_of_type
from ..loop import Deadline, Schedule, TrainLoop, cosine
from ..registry import register


@register("forget_free")
def forget_free(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    reinit_fractions: tuple[float, ...] = (0.1, 0.2, 0.3),
    epochs_per_cycle: int = 1,
    image_noise_std: float = 0.1,
    lr: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    if not reinit_fractions or not all(0.0 <= f <= 1.0 for f in reinit_fractions):
        raise ValueError(f"reinit_fractions must be fractions in [0, 1], got {reinit_fractions}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = count_batches(retain)
    per_cycle = epochs_per_cycle * n_retain
    loop = TrainLoop(deadline, planned_steps=len(reinit_fractions) * per_cycle, device=device)
    original = frozen_copy(net)
    layers = layers_of_type(net, nn.Conv2d, nn.Linear)

    net.train()
    for fraction in reinit_fractions:
        if loop.stopped:
            break
        k = min(len(layers), max(1, round(fraction * len(layers)))) if fraction > 0 else 0
        for i in torch.randperm(len(layers))[:k].tolist():
            layers[i].reset_parameters()
        optimizer = torch.optim.SGD(
            net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
        schedule = Schedule(optimizer, cosine, planned_steps=per_cycle)

        def step(batch, optimizer=optimizer):
            x, _ = batch
            x = x + image_noise_std * torch.randn_like(x)
            with torch.no_grad():
                target = original(x)
            optimizer.zero_grad(set_to_none=True)
            loss = F.mse_loss(net(x), target)
            loss.backward()
            optimizer.step()
            return loss

        for _ in range(epochs_per_cycle):
            loop.run(device_batches(retain, device), step, steps=n_retain, schedules=(schedule,))
    return net.eval()
