"""Conv transpose: swap the two spatial axes of every conv kernel, then fine-tune on retain.

Recipe (rank 6 on the Kaggle private leaderboard of the NeurIPS 2023 Machine Unlearning
competition; team toshi_k & marvelworld as methods.md names it, the port below names no team).
DeepUnlearn (Cadet et al. 2024, README of ``xcadet/deepunlearn``) calls it CT and found it, with
masked small gradients, among the most consistent methods across datasets and models. Every
``nn.Conv2d`` kernel is transposed in its spatial axes, ``w[o, i, h, w] <- w[o, i, w, h]``: the
filters keep their values and norms but now match transposed image patches, so the features
every layer computes are scrambled, and the forget set's memorised responses with them. Then
plain fine-tuning on the retain set relearns the task. The forget and validation sets are never
read.

Every number is the team's, as DeepUnlearn ported their notebook
(``xcadet/deepunlearn``, ``munl/unlearning/kgltop5.py`` at commit d3dacb6; DeepUnlearn numbers
its ports one below the private-leaderboard rank):

- transpose the kernel of every ``Conv2d`` (``swapaxes(2, 3)``), once, before the optimiser is
  built: l. 85-91;
- cross-entropy on the retain set: l. 96, 104-112;
- SGD, lr 1e-3 (l. 47), momentum 0.9 (l. 48), weight decay 5e-4 (l. 49), built at l. 97-99;
- 3 epochs: l. 46, 103;
- ``CosineAnnealingLR(T_max=epochs)`` (l. 100) stepped once per epoch (l. 113), so the three
  epochs run at constant rates of 1e-3, 7.5e-4 and 2.5e-4 (``lr * (1 + cos(pi * e / 3)) / 2``
  for e = 0, 1, 2), not a per-step cosine;
- the model in train mode throughout (l. 101), batch 64 (l. 50; the kit takes the loaders' size).

methods.md agrees with every one of these. Its note that the team's submission mixed these
runs with pseudo-label fine-tuning runs (246 / 266 models) is not in the port, and the team's
Kaggle writeup could not be found here to check it; the kit implements the transposition runs
only. The kit's previous version used lr 1e-2 with a per-step cosine, which the sources do not
support.

Adapted: the team replaces each conv's weight by a new ``Parameter``; the kit copies the
transposed values into the existing one (same values; optimisers and hooks a caller holds stay
valid). Square kernels only: a 1x1 kernel is its own transpose (left as it is, the same
result), and a non-square kernel cannot be transposed without changing the layer's shape (the
team's code would swap its kernel size). On torchvision's ResNet-18 (a 7x7 stem, 3x3 convs,
1x1 shortcuts, no non-square kernel) the result is the team's exactly. Layers are found by type
(``nn.Conv2d``), so any convolutional network works.

Budget: the transposition cannot be made smaller to suit a shorter recovery (transposing only
some convs, or blending, would be another method), and the published recovery is 3 full epochs.
So with a ``budget_s`` that does not fit them, the kit still runs the published recipe as far
as the budget allows, every epoch shortened evenly through the shared :class:`TrainLoop` with
its own per-epoch learning rate, and warns (:class:`ConvTransposeBudgetWarning`) with how many
of the planned retain steps ran. ``budget_s=None`` runs the recipe in full. ``epochs=0`` returns
the transposed model untrained.
"""


import torch
from torch import nn

from ..batches import count_batches, device_batches
from ..helpers import (
    RecoveryCutWarning,
    cross_entropy_step,
    device_of,
    layers_of_type,
    warn_if_recovery_cut,
)
from ..loop import Deadline, TrainLoop, cosine_epoch_rates, run_epochs_at
from ..registry import register


class ConvTransposeBudgetWarning(RecoveryCutWarning):
    """The budget cut the published 3 epochs of recovery after the kernels were transposed."""


@torch.no_grad()
def transpose_kernels(net: nn.Module) -> int:
    """Transposes the spatial axes of every square Conv2d kernel in place; returns the count.

    1x1 kernels (their own transpose) and non-square kernels are left as they are.
    """
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
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = count_batches(retain)
    planned = epochs * n_retain
    loop = TrainLoop(deadline, planned_steps=planned, device=device)
    transpose_kernels(net)
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    step = cross_entropy_step(net, optimizer)

    net.train()
    rates = cosine_epoch_rates(lr, epochs)  # stepped once an epoch
    run_epochs_at(loop, optimizer, rates, lambda: device_batches(retain, device), step,
                  steps=n_retain)  # fmt: skip
    warn_if_recovery_cut("conv_transpose", done=loop.steps, planned=planned, budget_s=budget_s,
                         steps=f"retain steps ({epochs} epochs)",
                         damage="the kernels were transposed",
                         category=ConvTransposeBudgetWarning)  # fmt: skip
    return net.eval()
