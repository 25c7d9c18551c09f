"""Selective Synaptic Dampening: shrink the weights far more important to the forget set.

Recipe (Foster et al. 2024, "Fast Machine Unlearning Without Retraining Through Selective
Synaptic Dampening", AAAI; ``ParameterPerturber`` in their code): diagonal importance
``[I]_i = mean over batches of (d loss / d w_i)**2`` on the forget set (``I_f``) and on the whole
training set (``I_D``, retain + forget); where ``I_f > alpha * I_D`` (alpha 10) multiply the
weight by ``min(lambda * I_D / I_f, 1)`` (lambda 1). No training.

Under a budget the forget set's importance is computed in full first (it is small), and the
retain set's is estimated from the retain batches that fit; ``I_D`` is then the mean over
*all* the training batches, each set weighted by its true number of batches
(``(n_f I_f + n_r I_r) / (n_f + n_r)``), never by the batches seen: weighting by what was seen
would make the forget set a large part of "all data" when few retain batches fit, so that
``I_f > alpha I_D`` held nowhere and the method silently did nothing. With no retain batch
at all within the budget, there is no estimate of ``I_D``: it warns and leaves the model as it
is. ``net.ssd_batches_`` records the batches used.
"""

import warnings

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
    # The forget pass runs whole (``full``): it is small, and a dampening chosen from part of
    # it would leave the weights that only the unseen forget examples rely on untouched.
    loop = TrainLoop(
        deadline, planned_steps=n_forget + n_retain, full_steps=n_forget, device=device
    )
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
    seen_forget = loop.run(
        device_batches(forget, device), importance_step, steps=n_forget, full=True
    )
    forget_sums = {p: s.clone() for p, s in sums.items()}
    for s in sums.values():
        s.zero_()
    seen_retain = loop.run(device_batches(retain, device), importance_step, steps=n_retain)
    net.zero_grad(set_to_none=True)
    net.ssd_batches_ = {"forget": seen_forget, "retain": seen_retain, "retain_planned": n_retain}
    if seen_forget == 0 or seen_retain == 0:
        warnings.warn(
            f"ssd: no importance estimate within budget_s={budget_s} ({seen_forget} of "
            f"{n_forget} forget and {seen_retain} of {n_retain} retain batches): the model is "
            "left as it was; give it a larger budget",
            stacklevel=2,
        )
        return net.eval()
    with torch.no_grad():
        for p in params:
            forget_mean = forget_sums[p] / seen_forget
            retain_mean = sums[p] / seen_retain  # an estimate when the budget cut it short
            full = (n_forget * forget_mean + n_retain * retain_mean) / (n_forget + n_retain)
            selected = forget_mean > alpha * full
            factor = (dampening * full / forget_mean.clamp_min(1e-30)).clamp_max(1.0)
            p[selected] = p[selected] * factor[selected]
    return net.eval()
