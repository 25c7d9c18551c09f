"""Forget contrast: flatten the forget predictions, then contrast forget outputs against retain.

Recipe (1st place, NeurIPS 2023 Machine Unlearning competition; methods.md, after
Triantafillou et al. 2024, "Are we making progress in unlearning?"): one pass over the forget
set minimising KL(softmax(f(x)) || uniform); then 8 epochs, each a forget round and a retain
round. Forget round: for a forget batch and a retain batch, the loss is the mean of
``-log_softmax(f(x_f) f(x_r)^T / 1.15)`` (rows: forget samples, columns: retain samples; the
retain logits detached), SGD lr 3e-4 with cosine decay to 1e-6 over the 8 rounds. Retain round:
CE, SGD lr 4e-3, momentum 0.9, weight decay 1e-2.

Adapted: a forget round is one pass over the forget set, each batch paired with the next
retain batch; a retain round is one pass over the retain set. The first pass uses the forget
optimiser at its initial learning rate. Momentum of the forget optimiser (0.9) is our choice.
"""

import math

import torch
import torch.nn.functional as F

from ..batches import count_batches, cycle_batches, device_batches
from ..helpers import device_of
from ..loop import Deadline, Schedule, TrainLoop, cosine
from ..registry import register


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(softmax(logits) || uniform) = sum p log p + log C."""
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * log_p).sum(1).mean() + math.log(logits.shape[1])


def output_contrast(forget_logits: torch.Tensor, retain_logits: torch.Tensor, temperature: float):
    """Mean of ``-log_softmax(z_f z_r^T / T)`` over rows (forget) and columns (retain)."""
    sim = forget_logits @ retain_logits.detach().T / temperature
    return -F.log_softmax(sim, dim=1).mean()


def cosine_to(floor: float, base: float):
    """Cosine shape ending at ``floor / base`` instead of 0 (``CosineAnnealingLR(eta_min)``)."""
    low = floor / base
    return lambda progress: low + (1.0 - low) * cosine(progress)


@register("forget_contrast")
def forget_contrast(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    epochs: int = 8,
    temperature: float = 1.15,
    forget_lr: float = 3e-4,
    forget_lr_min: float = 1e-6,
    forget_momentum: float = 0.9,
    retain_lr: float = 4e-3,
    momentum: float = 0.9,
    weight_decay: float = 1e-2,
):
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain, n_forget = count_batches(retain), count_batches(forget)
    loop = TrainLoop(
        deadline, planned_steps=n_forget + epochs * (n_forget + n_retain), device=device
    )
    forget_opt = torch.optim.SGD(net.parameters(), lr=forget_lr, momentum=forget_momentum)
    retain_opt = torch.optim.SGD(
        net.parameters(), lr=retain_lr, momentum=momentum, weight_decay=weight_decay
    )
    forget_schedule = Schedule(
        forget_opt, cosine_to(forget_lr_min, forget_lr), planned_steps=epochs * n_forget
    )

    def flatten_step(batch):
        x, _ = batch
        forget_opt.zero_grad(set_to_none=True)
        loss = kl_to_uniform(net(x))
        loss.backward()
        forget_opt.step()
        return loss

    def contrast_step(batch):
        (xf, _), (xr, _) = batch
        forget_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            retain_logits = net(xr)
        loss = output_contrast(net(xf), retain_logits, temperature)
        loss.backward()
        forget_opt.step()
        return loss

    def retain_step(batch):
        x, y = batch
        retain_opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        retain_opt.step()
        return loss

    net.train()
    loop.run(device_batches(forget, device), flatten_step, steps=n_forget)
    retain_cycle = cycle_batches(retain, device)
    for _ in range(epochs):
        if loop.stopped:
            break
        pairs = zip(device_batches(forget, device), retain_cycle, strict=False)
        loop.run(pairs, contrast_step, steps=n_forget, schedules=(forget_schedule,))
        loop.run(device_batches(retain, device), retain_step, steps=n_retain)
    return net.eval()
