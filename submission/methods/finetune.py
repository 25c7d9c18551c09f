"""Fine-tuning on the retain set only (the competition's template ``unlearning``).

Recipe (NeurIPS 2023 Machine Unlearning starting kit; Triantafillou et al. 2024, "Are we
making progress in unlearning?"): cross-entropy on retain, 1 epoch, SGD lr 1e-3, momentum
0.9, weight decay 5e-4, cosine schedule. Forgetting comes only from catastrophic forgetting.
"""

import torch

from ..batches import count_batches, device_batches
from ..helpers import cross_entropy_step, device_of
from ..loop import Deadline, Schedule, TrainLoop, cosine
from ..registry import register


@register("finetune")
def finetune(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    epochs: int = 1,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = count_batches(retain)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    schedule = Schedule(optimizer, cosine, planned_steps=epochs * n_retain)
    loop = TrainLoop(deadline, planned_steps=epochs * n_retain, device=device)

    step = cross_entropy_step(net, optimizer)

    net.train()
    loop.run_epochs(
        epochs, lambda: device_batches(retain, device), step, steps=n_retain, schedules=(schedule,)
    )
    return net.eval()
