"""Masked small gradients: re-initialise the conv weights that matter least to the retain/forget
trade-off, then fine-tune on retain with the surviving weights slowed down.

Recipe (2nd place, NeurIPS 2023 Machine Unlearning competition, as summarised in
Triantafillou et al. 2024, "Are we making progress in unlearning?"; the organisers found it
among the most consistent entries across datasets): accumulate the gradients of +CE on a
random retain subset the size of the forget set and of -CE on the forget set; in every
Conv2d re-initialise the 30% of weights with the smallest |gradient| (Kaiming normal,
fan_out); multiply the gradients of the kept conv weights by 0.1; fine-tune on retain for
5 epochs with SGD lr 1e-3 (momentum 0.9, weight decay 5e-4), linear warm-up then linear decay.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import count_batches, cycle_batches, device_batches
from ..helpers import apply_grad_masks, cross_entropy_step, device_of, layers_of_type
from ..loop import Deadline, Schedule, TrainLoop, warmup_linear
from ..registry import register


def smallest_fraction(grad: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask of the ``fraction`` of entries with the smallest |grad| (per tensor)."""
    k = round(fraction * grad.numel())
    mask = torch.zeros(grad.numel(), dtype=torch.bool, device=grad.device)
    if k > 0:
        mask[torch.topk(grad.abs().flatten(), k, largest=False, sorted=False).indices] = True
    return mask.view_as(grad)


@register("masked_small_gradients")
def masked_small_gradients(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    reinit_fraction: float = 0.3,
    kept_grad_scale: float = 0.1,
    epochs: int = 5,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    warmup: float = 0.1,
):
    if not 0.0 <= reinit_fraction <= 1.0:
        raise ValueError(f"reinit_fraction must lie in [0, 1], got {reinit_fraction}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain, n_forget = count_batches(retain), count_batches(forget)
    loop = TrainLoop(deadline, planned_steps=n_forget + epochs * n_retain, device=device)
    convs = [m.weight for m in layers_of_type(net, nn.Conv2d)]

    # 1. Gradients of +CE(retain subset) - CE(forget), accumulated in eval mode.
    net.eval()
    net.zero_grad(set_to_none=True)

    def grad_step(batch):
        (xf, yf), (xr, yr) = batch
        loss = F.cross_entropy(net(xr), yr) - F.cross_entropy(net(xf), yf)
        loss.backward()
        return loss

    batches = zip(device_batches(forget, device), cycle_batches(retain, device), strict=False)
    loop.run(batches, grad_step, steps=n_forget)

    # 2. Re-initialise the smallest-gradient conv weights; slow the kept ones down.
    masks = {}
    with torch.no_grad():
        for w in convs:
            grad = w.grad if w.grad is not None else torch.zeros_like(w)
            small = smallest_fraction(grad, reinit_fraction)
            fresh = nn.init.kaiming_normal_(
                torch.empty_like(w), mode="fan_out", nonlinearity="relu"
            )
            w[small] = fresh[small]
            masks[w] = torch.where(small, 1.0, kept_grad_scale).to(w.dtype)
    net.zero_grad(set_to_none=True)

    # 3. Fine-tune on retain (decay of the conv weights folded into their masks).
    conv_ids = {id(w) for w in convs}
    others = [p for p in net.parameters() if id(p) not in conv_ids]
    optimizer = torch.optim.SGD(
        [{"params": convs, "weight_decay": 0.0}, {"params": others, "weight_decay": weight_decay}],
        lr=lr,
        momentum=momentum,
    )
    schedule = Schedule(optimizer, warmup_linear(warmup), planned_steps=epochs * n_retain)

    step = cross_entropy_step(
        net, optimizer, before_step=lambda: apply_grad_masks(masks, weight_decay=weight_decay)
    )

    net.train()
    loop.run_epochs(
        epochs, lambda: device_batches(retain, device), step, steps=n_retain, schedules=(schedule,)
    )
    return net.eval()
