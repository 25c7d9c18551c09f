"""Random-label unlearning: train on the forget set relabelled at random, mixed with retain.

Recipe (Golatkar et al. 2020 / Hayase et al. 2020 baseline, as run by Fan et al. 2024,
"SalUn", ICLR, ``unlearn/RL.py``): the forget samples get a random wrong label and are
trained on together with the retain samples (one epoch = every retain and every relabelled
forget batch once, mixed evenly); 10 epochs, SGD lr 0.013, momentum 0.9, weight decay 5e-4.
"""

import torch
import torch.nn.functional as F

from ..batches import count_batches, mixed_batches
from ..helpers import device_of, num_classes, random_wrong_labels
from ..loop import Deadline, Schedule, TrainLoop, cosine
from ..registry import register


def relabelled_step(net, optimizer, *, before_step=None):
    """A step on a ``(retain | None, forget | None)`` pair, forget labels made random & wrong."""
    classes = num_classes(net)

    def step(batch):
        retain_part, forget_part = batch
        xs, ys = [], []
        if retain_part is not None:
            xs.append(retain_part[0])
            ys.append(retain_part[1])
        if forget_part is not None:
            xs.append(forget_part[0])
            ys.append(random_wrong_labels(forget_part[1], classes))
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(torch.cat(xs)), torch.cat(ys))
        loss.backward()
        if before_step is not None:
            before_step()
        optimizer.step()
        return loss

    return step


@register("random_label")
def random_label(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    epochs: int = 10,
    lr: float = 0.013,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain, n_forget = count_batches(retain), count_batches(forget)
    per_epoch = max(n_retain, n_forget)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    schedule = Schedule(optimizer, cosine, planned_steps=epochs * per_epoch)
    loop = TrainLoop(deadline, planned_steps=epochs * per_epoch, device=device)
    step = relabelled_step(net, optimizer)

    net.train()
    loop.run_epochs(
        epochs,
        lambda: mixed_batches(retain, forget, device, n_retain=n_retain, n_forget=n_forget),
        step,
        steps=per_epoch,
        schedules=(schedule,),
    )
    return net.eval()
