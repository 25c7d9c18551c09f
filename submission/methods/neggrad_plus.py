"""NegGrad+: gradient descent on retain and ascent on forget in the same step.

Recipe (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning", NeurIPS; the NegGrad+
baseline of their code ``meghdadk/SCRUB``), for the loss: ``loss = a * CE(retain batch) -
(1 - a) * CE(forget batch)`` with a = 0.95 (their small-scale notebook; 0.9999 in the
large-scale ones), one retain epoch with the forget set cycled alongside
(``zip(retain, cycle(forget))``).

The optimizer is the kit's, not theirs: one epoch of SGD lr 1e-3, momentum 0.9, weight decay
5e-4, cosine (the competition starter's fine-tuning settings, as ``finetune``). Their code runs
5-10 epochs of plain SGD at lr 0.01 without momentum (``train_negrad``; the small-scale
notebook's own loop adds an L2 pull towards the original weights to the retain term and keeps
the model in eval mode): ``epochs=10, lr=0.01, momentum=0.0, weight_decay=0.0`` comes near.
"""

import torch
import torch.nn.functional as F

from ..batches import count_batches, cycle_batches, device_batches
from ..helpers import device_of
from ..loop import Deadline, Schedule, TrainLoop, cosine
from ..registry import register


@register("neggrad_plus")
def neggrad_plus(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    alpha: float = 0.95,
    epochs: int = 1,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = count_batches(retain)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    schedule = Schedule(optimizer, cosine, planned_steps=epochs * n_retain)
    loop = TrainLoop(deadline, planned_steps=epochs * n_retain, device=device)
    forget_batches = cycle_batches(forget, device)

    def step(batch):
        (xr, yr), (xf, yf) = batch
        optimizer.zero_grad(set_to_none=True)
        loss = alpha * F.cross_entropy(net(xr), yr) - (1 - alpha) * F.cross_entropy(net(xf), yf)
        loss.backward()
        optimizer.step()
        return loss

    net.train()
    loop.run_epochs(
        epochs,
        lambda: zip(device_batches(retain, device), forget_batches, strict=False),
        step,
        steps=n_retain,
        schedules=(schedule,),
    )
    return net.eval()
