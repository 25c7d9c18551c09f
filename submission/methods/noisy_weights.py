"""Noisy weights: drown the conv weights in Gaussian noise, then fine-tune on retain.

Recipe (3rd place, NeurIPS 2023 Machine Unlearning competition; methods.md, after
Triantafillou et al. 2024, "Are we making progress in unlearning?"): add N(0, 0.6) noise to
every conv weight (0.6 read as the standard deviation), fine-tune 4 epochs on retain with
class-weighted cross-entropy, and add N(0, 0.005) noise to the conv weights again before the
last epoch.

Adapted: class weights are inverse label frequencies counted over the retain batches seen so
far (an extra pass only to count labels would cost a whole epoch of data loading); the
optimiser is not given in methods.md: SGD lr 1e-2 (the noise leaves little of the features,
so this is closer to retraining than to fine-tuning), momentum 0.9, weight decay 5e-4, cosine.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import count_batches, device_batches
from ..helpers import device_of, layers_of_type, num_classes
from ..loop import Deadline, Schedule, TrainLoop, cosine
from ..registry import register


@torch.no_grad()
def add_noise(weights: list[torch.Tensor], std: float) -> None:
    for w in weights:
        w.add_(torch.randn_like(w) * std)


@register("noisy_weights")
def noisy_weights(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    noise_std: float = 0.6,
    renoise_std: float = 0.005,
    epochs: int = 4,
    lr: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    if noise_std < 0 or renoise_std < 0:
        raise ValueError(f"noise standard deviations must be >= 0, got {noise_std}, {renoise_std}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = count_batches(retain)
    loop = TrainLoop(deadline, planned_steps=epochs * n_retain, device=device)
    convs = [m.weight for m in layers_of_type(net, nn.Conv2d)]
    counts = torch.zeros(num_classes(net), device=device)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    schedule = Schedule(optimizer, cosine, planned_steps=epochs * n_retain)

    def step(batch):
        x, y = batch
        counts.add_(torch.bincount(y, minlength=len(counts))[: len(counts)])
        weight = 1.0 / counts.clamp_min(1.0)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y, weight=weight)
        loss.backward()
        optimizer.step()
        return loss

    add_noise(convs, noise_std)
    net.train()
    for epoch in range(epochs):
        if loop.stopped:
            break
        if epoch == epochs - 1:
            add_noise(convs, renoise_std)
        loop.run(device_batches(retain, device), step, steps=n_retain, schedules=(schedule,))
    return net.eval()
