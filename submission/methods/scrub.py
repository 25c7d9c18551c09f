"""SCRUB: a student that stays close to the original (teacher) on retain and moves away on forget.

Recipe (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning", NeurIPS; defaults of
their ``small_scale`` CIFAR scripts): student = the network, teacher = a frozen copy of the
original. For the first ``msteps`` epochs a max-step over the forget set maximises
KL(teacher || student) at temperature T = 4; then every epoch a min-step over the retain set
minimises ``gamma * CE + alpha * KL`` (gamma 0.99, alpha 0.001); 3 epochs, SGD lr 5e-4,
momentum 0.9, weight decay 5e-4, one optimizer for both steps.
"""

import torch
import torch.nn.functional as F

from ..batches import count_batches, device_batches
from ..helpers import device_of, frozen_copy, teacher_kl
from ..loop import Deadline, TrainLoop
from ..registry import register


@register("scrub")
def scrub(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    epochs: int = 3,
    msteps: int = 2,
    gamma: float = 0.99,
    alpha: float = 0.001,
    temperature: float = 4.0,
    lr: float = 5e-4,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain, n_forget = count_batches(retain), count_batches(forget)
    max_epochs = min(msteps, epochs)
    loop = TrainLoop(
        deadline, planned_steps=max_epochs * n_forget + epochs * n_retain, device=device
    )
    teacher = frozen_copy(net)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )

    def max_step(batch):
        x, _ = batch
        with torch.no_grad():
            target = teacher(x)
        optimizer.zero_grad(set_to_none=True)
        loss = -teacher_kl(net(x), target, temperature)
        loss.backward()
        optimizer.step()
        return loss

    def min_step(batch):
        x, y = batch
        with torch.no_grad():
            target = teacher(x)
        optimizer.zero_grad(set_to_none=True)
        logits = net(x)
        loss = gamma * F.cross_entropy(logits, y) + alpha * teacher_kl(logits, target, temperature)
        loss.backward()
        optimizer.step()
        return loss

    net.train()
    for epoch in range(epochs):
        if epoch < max_epochs:
            loop.run(device_batches(forget, device), max_step, steps=n_forget)
        loop.run(device_batches(retain, device), min_step, steps=n_retain)
        if loop.stopped:
            break
    return net.eval()
