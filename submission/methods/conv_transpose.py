"""Conv transpose: swap the spatial axes of every conv kernel, then fine-tune on retain.

Recipe (5th place, NeurIPS 2023 Machine Unlearning competition; methods.md, after
Triantafillou et al. 2024, "Are we making progress in unlearning?", whose follow-up study
found it among the most consistent entries across datasets): transpose the spatial axes of
every conv kernel (``w[o, i, h, w] <- w[o, i, w, h]``), then fine-tune 3 epochs on retain.

Adapted: non-square kernels (which cannot be transposed in place) and 1x1 kernels (for which
transposing is the identity) are left as they are. The optimiser is not given in methods.md:
SGD lr 1e-2 (every conv feature is scrambled), momentum 0.9, weight decay 5e-4, cosine.
"""

import torch
from torch import nn

from ..batches import count_batches, device_batches
from ..helpers import cross_entropy_step, device_of, layers_of_type
from ..loop import Deadline, Schedule, TrainLoop, cosine
from ..registry import register


@torch.no_grad()
def transpose_kernels(net: nn.Module) -> int:
    """Transposes the spatial axes of every square Conv2d kernel in place; returns the count."""
    done = 0
    for conv in layers_of_type(net, nn.Conv2d):
        kh, kw = conv.kernel_size
        if kh == kw and kh > 1:
            conv.weight.copy_(conv.weight.transpose(2, 3).clone())
            done += 1
    return done


@register("conv_transpose")
def conv_transpose(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    epochs: int = 3,
    lr: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = count_batches(retain)
    loop = TrainLoop(deadline, planned_steps=epochs * n_retain, device=device)
    transpose_kernels(net)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    schedule = Schedule(optimizer, cosine, planned_steps=epochs * n_retain)

    step = cross_entropy_step(net, optimizer)

    net.train()
    loop.run_epochs(
        epochs, lambda: device_batches(retain, device), step, steps=n_retain, schedules=(schedule,)
    )
    return net.eval()
