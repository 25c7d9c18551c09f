"""Fine-tuning on the retain set only (the competition's template ``unlearning``).

Recipe (the example ``unlearning`` of the NeurIPS 2023 Machine Unlearning competition's Kaggle
template notebook, as participants' copies of it show; Triantafillou et al. 2024, "Are we
making progress in unlearning?"): cross-entropy on retain, 1 epoch, SGD lr 1e-3, momentum 0.9,
weight decay 5e-4, ``CosineAnnealingLR(T_max=epochs)`` stepped once after each epoch, so the
rate is constant within an epoch and the single epoch runs at 1e-3 throughout. Forgetting
comes only from catastrophic forgetting. (The public GitHub starting kit's example, on
CIFAR-10, fine-tunes 5 epochs at lr 0.1 with the same schedule: ``epochs=5, lr=0.1``.)
"""

import torch

from ..batches import count_batches, device_batches
from ..helpers import cross_entropy_step, device_of
from ..loop import Deadline, TrainLoop, cosine_epoch_rates, run_epochs_at
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
    loop = TrainLoop(deadline, planned_steps=epochs * n_retain, device=device)
    step = cross_entropy_step(net, optimizer)

    net.train()
    rates = cosine_epoch_rates(lr, epochs)  # stepped once an epoch
    run_epochs_at(loop, optimizer, rates, lambda: device_batches(retain, device), step,
                  steps=n_retain)  # fmt: skip
    return net.eval()
