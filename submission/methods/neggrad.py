"""NegGrad: gradient ascent on the forget set alone, the baseline NegGrad+ extends.

Recipe (the "NegGrad" baseline of Kurmanji et al. 2023, "Towards Unbounded Machine
Unlearning", NeurIPS, and of the seed papers' course report on this competition): maximise
``CE(forget batch)`` by stepping against its gradient; the retain set is never read.
``neggrad_plus`` adds the retain term; this is its ``alpha = 0`` end.

The settings are the kit's, not a paper's (neither source fixes them for this model): the
optimizer of ``neggrad_plus`` (SGD lr 1e-3, momentum 0.9, weight decay 5e-4, cosine to 0) and
5 passes over the forget set, which is small, so a run is short. Unbounded ascent destroys
the model if it runs long; that is what the baseline shows.
"""

import torch
import torch.nn.functional as F

from ..batches import count_batches, device_batches
from ..helpers import device_of
from ..loop import Deadline, Schedule, TrainLoop, cosine
from ..registry import register


@register("neggrad")
def neggrad(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    epochs: int = 5,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_forget = count_batches(forget)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    schedule = Schedule(optimizer, cosine, planned_steps=epochs * n_forget)
    loop = TrainLoop(deadline, planned_steps=epochs * n_forget, device=device)

    def step(batch):
        x, y = batch
        optimizer.zero_grad(set_to_none=True)
        loss = -F.cross_entropy(net(x), y)  # ascent: descend on the negated loss
        loss.backward()
        optimizer.step()
        return loss

    net.train()
    loop.run_epochs(
        epochs, lambda: device_batches(forget, device), step, steps=n_forget, schedules=(schedule,)
    )
    return net.eval()
