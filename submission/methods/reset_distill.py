"""Reset and distil: reset the first conv and the classifier, relearn them from the original.

Recipe (6th place, NeurIPS 2023 Machine Unlearning competition; methods.md, after
Triantafillou et al. 2024, "Are we making progress in unlearning?"): re-initialise the first
convolution and the classifier; distil the original model (the teacher) on the validation
data at temperature 5 for 3 epochs; then 3 epochs on retain with CE plus KL to the teacher.

Adapted: the first conv and the classifier are found by type (the first ``nn.Conv2d`` and the
last ``nn.Linear``); the retain phase uses the same temperature and ``CE + kl_weight * KL``
(kl_weight 1). The optimiser is not given in methods.md: one SGD, lr 1e-2 (two layers start
from scratch), momentum 0.9, weight decay 5e-4, cosine over both phases.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import count_batches, device_batches
from ..helpers import device_of, frozen_copy, last_linear, layers_of_type, teacher_kl
from ..loop import Deadline, Schedule, TrainLoop, cosine
from ..registry import register


@register("reset_distill")
def reset_distill(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    distill_epochs: int = 3,
    retain_epochs: int = 3,
    temperature: float = 5.0,
    kl_weight: float = 1.0,
    lr: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_val, n_retain = count_batches(val), count_batches(retain)
    planned = distill_epochs * n_val + retain_epochs * n_retain
    loop = TrainLoop(deadline, planned_steps=planned, device=device)
    teacher = frozen_copy(net)
    convs = layers_of_type(net, nn.Conv2d)
    for layer in [*convs[:1], last_linear(net)]:
        layer.reset_parameters()
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    schedule = Schedule(optimizer, cosine, planned_steps=planned)

    def distill_step(batch):
        x, _ = batch
        with torch.no_grad():
            target = teacher(x)
        optimizer.zero_grad(set_to_none=True)
        loss = teacher_kl(net(x), target, temperature)
        loss.backward()
        optimizer.step()
        return loss

    def retain_step(batch):
        x, y = batch
        with torch.no_grad():
            target = teacher(x)
        optimizer.zero_grad(set_to_none=True)
        logits = net(x)
        loss = F.cross_entropy(logits, y) + kl_weight * teacher_kl(logits, target, temperature)
        loss.backward()
        optimizer.step()
        return loss

    net.train()
    phases = [(val, distill_step, n_val)] * distill_epochs
    phases += [(retain, retain_step, n_retain)] * retain_epochs
    for loader, step, steps in phases:
        if loop.stopped:
            break
        loop.run(device_batches(loader, device), step, steps=steps, schedules=(schedule,))
    return net.eval()
