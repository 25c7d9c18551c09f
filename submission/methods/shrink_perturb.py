"""Shrink and perturb, then fine-tune: each run redraws part of the network, then relearns.

Why (the kit's own method; see docs/leaderboard.md): the competition's score attacks every
forget example with the confidences of N unlearned models against N retrained ones. Retrained
models differ from each other by their seeds, so each example's confidence has a seed spread.
Runs that all start from one original and change it gently (fine-tuning, SalUn, SCRUB) land
close together: a tight cluster that an interval attack separates from the retrained spread,
whatever its centre. On digits at N = 16 and N = 32, N originals trained with other seeds
(no unlearning at all) score far above such methods for that reason alone. So each run here
draws its own fresh initialisation, mixes it into the weights (giving every run a different
function, as a seed would), and fine-tunes on the retain set alone, which restores accuracy
while the forget set, no longer reinforced, drifts towards held-out confidence.

Recipe (the kit's own, 2026; its first step is the shrink-and-perturb warm start of
Ash and Adams ("On Warm-Starting Neural
Network Training", NeurIPS 2020)): ``w <- shrink * w + perturb * w_init`` for the weight and
bias of every convolution and linear layer, ``w_init`` a fresh draw of the layer's default
initialisation (so the noise has each layer's own scale, for any architecture; BatchNorm
layers keep their parameters and statistics), then cross-entropy on retain with Adam, a
one-cycle schedule (warm-up over the first quarter, cosine to 0) and ``epochs`` planned
epochs, scaled down to the budget. The perturbation is what the noise-based competition entries
(``noisy_weights``, ``noise_injection``) do with a fixed Gaussian; here its scale follows the
layer, and the relearning is short and gentle (lr 3e-3) so the runs keep their spread.

Defaults were chosen on digits (small CNN, random 10% forget set, a budget of 20% of one
retraining, N = 16 and 32): ``perturb`` 0.3-0.5 with ``shrink`` 0.9-1 all scored within
noise of each other, above every other method of the kit; ``lr`` 1e-2 made the runs spread
twice as wide as the retrained models and scored lower, 1e-3 left the forget set too
confident. A full re-initialisation (``shrink`` 0) cannot relearn in that budget. Not tuned
on ResNet-18 or the competition's face data: check with ``python -m local_eval`` there.
"""

import copy

import torch
from torch import nn

from ..batches import count_batches, device_batches
from ..helpers import cross_entropy_step, device_of
from ..loop import Deadline, Schedule, TrainLoop, one_cycle
from ..registry import register

PERTURBED = (nn.Conv2d, nn.Linear)  # layers whose weights are mixed with a fresh draw


@torch.no_grad()
def shrink_and_perturb(net: nn.Module, *, shrink: float, perturb: float) -> None:
    """``w <- shrink * w + perturb * w_init`` for every conv and linear layer, in place.

    ``w_init`` is a fresh draw of each layer's own initialisation (``reset_parameters`` on a
    copy of the layer) from torch's global generator: seed it for a reproducible run.
    """
    for layer in [m for m in net.modules() if isinstance(m, PERTURBED)]:
        fresh = copy.deepcopy(layer)
        fresh.reset_parameters()
        for name in ("weight", "bias"):
            w, w_init = getattr(layer, name), getattr(fresh, name)
            if w is not None:
                w.mul_(shrink).add_(w_init, alpha=perturb)


@register("shrink_perturb")
def shrink_perturb(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    shrink: float = 1.0,
    perturb: float = 0.5,
    epochs: int = 2,
    lr: float = 3e-3,
    warmup: float = 0.25,
    weight_decay: float = 0.0,
):
    if not 0.0 <= shrink <= 1.0 or perturb < 0.0 or (shrink == 1.0 and perturb == 0.0):
        raise ValueError(
            f"need 0 <= shrink <= 1 and perturb >= 0, not both a no-op; got shrink={shrink}, "
            f"perturb={perturb}"
        )
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = count_batches(retain)
    loop = TrainLoop(deadline, planned_steps=epochs * n_retain, device=device)
    shrink_and_perturb(net, shrink=shrink, perturb=perturb)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = Schedule(optimizer, one_cycle(warmup), planned_steps=epochs * n_retain)
    step = cross_entropy_step(net, optimizer)
    net.train()
    loop.run_epochs(
        epochs, lambda: device_batches(retain, device), step, steps=n_retain, schedules=(schedule,)
    )
    return net.eval()
