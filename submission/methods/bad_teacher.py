"""Bad teacher: distil the original on retain and a randomly initialised network on forget.

Recipe (Chundawat et al. 2023, "Can Bad Teaching Induce Forgetting? Unlearning in Deep
Networks Using an Incompetent Teacher", AAAI; ``blindspot_unlearner`` in their code): the
student (the network) is trained for 1 epoch on the forget set mixed with 30% of the retain
set, minimising KL(teacher || student) at T = 1, where the teacher is the frozen original
for retain samples and a frozen randomly initialised copy for forget samples; Adam lr 1e-4.
"""

import math

import torch

from ..batches import count_batches, mixed_batches
from ..helpers import device_of, frozen_copy, reinitialise, teacher_kl
from ..loop import Deadline, TrainLoop
from ..registry import register


@register("bad_teacher")
def bad_teacher(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    retain_fraction: float = 0.3,
    epochs: int = 1,
    temperature: float = 1.0,
    lr: float = 1e-4,
):
    if not 0.0 < retain_fraction <= 1.0:
        raise ValueError(f"retain_fraction must lie in (0, 1], got {retain_fraction}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = math.ceil(retain_fraction * count_batches(retain))
    n_forget = count_batches(forget)
    per_epoch = max(n_retain, n_forget)
    loop = TrainLoop(deadline, planned_steps=epochs * per_epoch, device=device)
    competent = frozen_copy(net)
    incompetent = reinitialise(frozen_copy(net))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)

    def step(batch):
        xs, targets = [], []
        with torch.no_grad():
            for part, teacher in zip(batch, (competent, incompetent), strict=True):
                if part is not None:
                    xs.append(part[0])
                    targets.append(teacher(part[0]))
        optimizer.zero_grad(set_to_none=True)
        loss = teacher_kl(net(torch.cat(xs)), torch.cat(targets), temperature)
        loss.backward()
        optimizer.step()
        return loss

    net.train()
    # A shuffling retain loader makes the first n_retain batches a fresh random subset.
    loop.run_epochs(
        epochs,
        lambda: mixed_batches(retain, forget, device, n_retain=n_retain, n_forget=n_forget),
        step,
        steps=per_epoch,
    )
    return net.eval()
