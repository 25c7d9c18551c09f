"""Random-label unlearning: train on the forget set relabelled at random, then on retain.

Recipe (the baseline of Golatkar et al. 2020 / Hayase et al. 2020 as Fan et al. 2024 run it,
"SalUn", ICLR: ``Classification/unlearn/RL.py``, ``unlearn/impl.py`` and ``arg_parser.py`` of
``OPTML-Group/Unlearn-Saliency``): each epoch first goes over every forget batch with labels
drawn uniformly over the classes (``torch.randint(0, num_classes)``: one label in C stays the
true one), then over every retain batch with its own labels (their CIFAR-10 branch; the
CIFAR-100 one shuffles the two sets together); 10 epochs, SGD lr 0.013 (the README's SalUn
command, which runs this loop), momentum 0.9, weight decay 5e-4, the rate constant (their
MultiStepLR decays at epochs 91 and 136, after the 10).

Under a budget it runs as many whole epochs as fit (each epoch's forget pass is damage its
retain pass repairs, so the two are never cut apart: with the forget passes whole and the
retain passes cut, the damage outran the repair, docs/leaderboard.md), judged by the slowest
epoch so far; a budget too short for one epoch cuts the first one's retain pass.
"""

import torch

from ..batches import count_batches, device_batches
from ..helpers import cross_entropy_step, device_of, num_classes
from ..loop import Deadline, TrainLoop
from ..registry import register


def relabelled_epochs(net, optimizer, retain, forget, loop: TrainLoop, *, epochs: int,
                      before_step=None) -> None:  # fmt: skip
    """RL.py's epochs on ``net`` (train mode) within ``loop``: the forget set relabelled at
    random, then the retain set, both whole (``loop`` plans them as full phases), as many
    epochs as fit its deadline. ``before_step`` runs between the backward pass and the
    optimizer step."""
    device = device_of(net)
    classes = num_classes(net)
    n_retain, n_forget = count_batches(retain), count_batches(forget)

    train_step = cross_entropy_step(net, optimizer, before_step=before_step)

    def step(batch, relabel: bool):
        x, y = batch
        if relabel:
            y = torch.randint(0, classes, y.shape, device=y.device)
        return train_step((x, y))

    net.train()
    slowest = 0.0  # seconds of the slowest epoch so far
    for epoch in range(epochs):
        if epoch and loop.deadline.remaining() < slowest:
            break  # another whole epoch does not fit
        start = loop.deadline.elapsed()
        loop.run(device_batches(forget, device), lambda b: step(b, True), steps=n_forget, full=True)
        loop.run(device_batches(retain, device), lambda b: step(b, False), steps=n_retain,
                 full=True)  # fmt: skip
        slowest = max(slowest, loop.deadline.elapsed() - start)
        if loop.stopped:
            break


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
    n_retain, n_forget = count_batches(retain), count_batches(forget)
    planned = epochs * (n_forget + n_retain)
    loop = TrainLoop(Deadline(budget_s), planned_steps=planned, full_steps=planned,
                     device=device_of(net))  # fmt: skip
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    relabelled_epochs(net, optimizer, retain, forget, loop, epochs=epochs)
    return net.eval()
