"""Selective Synaptic Dampening: shrink the weights far more important to the forget set.

Recipe (Foster et al. 2024, "Fast Machine Unlearning Without Retraining Through Selective
Synaptic Dampening", AAAI; ``ParameterPerturber`` in their code): diagonal importance
``[I]_i = mean over batches of (d loss / d w_i)**2`` on the forget set (``I_f``) and on the whole
training set (``I_D``, retain + forget); where ``I_f > alpha * I_D`` (alpha 10) multiply the
weight by ``min(lambda * I_D / I_f, 1)`` (lambda 1). No training. Under a budget, ``I_D`` is
estimated on a subsample of the retain batches (the forget batches always count).
"""

import torch
import torch.nn.functional as F

from ..batches import count_batches, device_batches
from ..helpers import device_of
from ..loop import Deadline, TrainLoop
from ..registry import register


@register("ssd")
def ssd(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    alpha: float = 10.0,
    dampening: float = 1.0,
):
    if alpha <= 0 or dampening <= 0:
        raise ValueError(f"alpha and dampening must be positive, got {alpha}, {dampening}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain, n_forget = count_batches(retain), count_batches(forget)
    loop = TrainLoop(deadline, planned_steps=n_forget + n_retain, device=device)
    params = [p for p in net.parameters() if p.requires_grad]
    sums = {p: torch.zeros_like(p) for p in params}

    def importance_step(batch):
        x, y = batch
        net.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    sums[p].add_(p.grad.square())
        return loss

    net.eval()  # importances only: BatchNorm statistics stay as trained
    seen_forget = loop.run(device_batches(forget, device), importance_step, steps=n_forget)
    forget_importance = {p: s / max(seen_forget, 1) for p, s in sums.items()}
    seen_retain = loop.run(device_batches(retain, device), importance_step, steps=n_retain)
    net.zero_grad(set_to_none=True)
    if seen_forget == 0:
        return net.eval()
    with torch.no_grad():
        for p in params:
            full = sums[p] / (seen_forget + seen_retain)
            selected = forget_importance[p] > alpha * full
            factor = (dampening * full / forget_importance[p].clamp_min(1e-30)).clamp_max(1.0)
            p[selected] = p[selected] * factor[selected]
    return net.eval()
