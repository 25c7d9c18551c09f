"""Masked small gradients: re-initialise the conv weights with the smallest gradient of the
retain-minus-forget loss, then fine-tune on retain with the surviving conv weights slowed down.

Recipe (rank 3 on the Kaggle private leaderboard of the NeurIPS 2023 Machine Unlearning
competition, team Kookmin University; DeepUnlearn calls it MSG and found it, with conv
transpose, among the most consistent methods across datasets and models, README l. 7):

1. Gradients, accumulated over one pass each, of +CE on a random retain subset as large as the
   forget set and of -CE on the forget set (each batch's mean CE, summed over the batches).
2. In every ``nn.Conv2d`` (the stem, the 3x3 convs and the 1x1 shortcut convs of a ResNet-18)
   the ``reinit_fraction`` = 30% of the weights with the smallest |gradient| are redrawn from
   Kaiming normal (fan_out, ReLU gain); the others keep their values.
3. Fine-tuning with cross-entropy on the retain set, in train mode, with one SGD over every
   parameter; in each conv the loss gradient of a kept weight is multiplied by
   ``kept_grad_scale`` = 0.1 (a redrawn weight's by 1) for the whole fine-tuning. The mask
   scales only the loss gradient: weight decay and momentum act on every weight in full.

Every number is the team's, as DeepUnlearn ported their notebook (``xcadet/deepunlearn``,
``munl/unlearning/kgltop2.py`` at commit d3dacb6; ``munl/settings.py`` l. 239 names it MSG):

- the retain subset: ``randperm`` of the retain dataset cut to ``len(forget.dataset)``, batch
  64 (l. 149-153); +CE on it, then -CE on the forget loader, after one ``zero_grad`` (l. 155-170);
- in every ``nn.Conv2d``: ``round(0.3 * numel)`` (l. 117, 197) entries of largest ``-|grad|``,
  i.e. smallest |grad| (l. 120-122), per tensor; redrawn with ``kaiming_normal_(mode="fan_out",
  nonlinearity="relu")`` and the rest copied back (l. 139-143);
- gradient mask 1 on the redrawn entries, 0.1 on the kept ones (l. 123-124), applied by an
  autograd function to the conv weight in the forward pass (l. 17-26, 58-60), so it scales
  d(loss)/dw only;
- SGD over ``net.parameters()``: lr 1e-3 (l. 198), momentum 0.9 (l. 201), weight decay 5e-4
  (l. 200), built l. 243-245; 5 epochs (l. 199, 255) of cross-entropy on the retain loader
  (l. 242, 256-265), train mode (l. 253);
- schedule: ``LinearAnnealingLR(num_annealing_steps=(epochs + 1) // 2,
  num_total_steps=epochs + 1)`` (l. 173-192, 247-251), stepped once per epoch (l. 267): with the
  constructor's own first step the 5 epochs run at lr x [1/3, 2/3, 1, 2/3, 1/3]
  (:func:`epoch_lr_factors`), constant within an epoch;
- a conv that has a bias gets the bias of a freshly built conv (default init: the new module
  is built with ``bias=m.bias != None`` and only its weight is copied back, l. 126-143); this
  does not arise on torchvision's ResNet-18 (no conv has a bias). ``redraw_conv_bias=False``
  keeps such biases instead.

methods.md agrees with every number above. The team's writeup ("3rd place solution",
kaggle.com/c/neurips-2023-machine-unlearning/discussion/459200) agrees with the port on the gradient
collection (ascent on forget, descent on an equal-sized random retain subset), the 30%
smallest-|gradient| conv weights redrawn with He initialisation (fan_out, relu), the 1/10 gradient
scale of the kept weights and a warm-up-then-linear-decay schedule; it calls the re-initialisation
"globally unstructured", where the port's code picks 30% of each conv: the kit follows the code. The
kit's previous version differed: weight decay of the kept conv weights scaled by 0.1 with their
gradients (the team's decay is unscaled), a per-step linear warm-up then decay (the team's per-epoch
[1/3, 2/3, 1, 2/3, 1/3]), a retain subset of as many loader batches as the forget set has rather
than as many samples, and conv biases kept.

Adapted: the team swaps each conv for a masked subclass; the kit keeps the modules and copies
the redrawn values into the existing weights, and multiplies the conv weights' gradients by the
mask between ``backward()`` and ``step()`` (the same update: the mask touches the loss gradient
only, and SGD then adds the decay). The retain subset is the first ``len(forget)`` samples the
retain loader yields (the last batch cut to fit): a random subset where the loader shuffles, as
the competition's does; the kit cannot index an arbitrary loader's dataset. The team's code
sets no mode for the gradient pass (l. 238), so it runs in whatever mode the caller left: the
competition's own loop builds ``resnet18(weights=None, num_classes=10)`` (train mode) and only
reloads the weights between runs, so its first run took these gradients in train mode and, if
the team's notebook ended in ``net.eval()`` as the port does (l. 268; not checked against the
notebook), every later run in eval mode. The kit takes them in eval mode, the mode the kit's
runner hands the model in, so this pass does not move BatchNorm statistics. Layers are found
by type (``nn.Conv2d``), never by name.

Budget: the gradient pass reads the forget set and an equal retain subset (cheap) and decides
what is forgotten, so it runs whole (``run(..., full=True)``). The re-initialisation of 30% of
every conv is the published damage, sized for 5 epochs of recovery; a smaller fraction would be
another trade-off the team did not tune (no rule ties the fraction to the epochs), so the kit
does not resize it: it runs the published recipe as far as the budget allows, every epoch
shortened evenly through the shared :class:`TrainLoop` at its own per-epoch learning rate, and
warns (:class:`MaskedSmallGradientsBudgetWarning`) with how many of the planned fine-tuning
steps ran. ``budget_s=None`` runs the recipe in full; ``epochs=0`` returns the re-initialised
model untrained.
"""

import math
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import count_batches, device_batches
from ..helpers import (
    RecoveryCutWarning,
    apply_grad_masks,
    cross_entropy_step,
    device_of,
    layers_of_type,
    warn_if_recovery_cut,
)
from ..loop import Deadline, TrainLoop
from ..registry import register


class MaskedSmallGradientsBudgetWarning(RecoveryCutWarning):
    """The budget cut the 5 epochs of recovery the 30% re-initialisation was sized for."""


def smallest_fraction(grad: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask of the ``round(fraction * numel)`` entries with the smallest |grad|."""
    k = round(fraction * grad.numel())
    mask = torch.zeros(grad.numel(), dtype=torch.bool, device=grad.device)
    if k > 0:
        mask[torch.topk(grad.abs().flatten(), k, largest=False, sorted=False).indices] = True
    return mask.view_as(grad)


@torch.no_grad()
def reinit_small_gradients(
    conv: nn.Conv2d, fraction: float, kept_grad_scale: float, *, redraw_bias: bool = True
) -> torch.Tensor:
    """Redraws the ``fraction`` of ``conv.weight`` with the smallest |grad| (Kaiming normal,
    fan_out, ReLU gain) and returns the gradient mask: 1 there, ``kept_grad_scale`` elsewhere.

    ``redraw_bias``: a bias, if any, is redrawn from the default ``U(+-1/sqrt(fan_in))``.
    A weight without a gradient counts as all-zero gradients.
    """
    w = conv.weight
    grad = w.grad if w.grad is not None else torch.zeros_like(w)
    small = smallest_fraction(grad, fraction)
    fresh = nn.init.kaiming_normal_(torch.empty_like(w), mode="fan_out", nonlinearity="relu")
    w[small] = fresh[small]
    if redraw_bias and conv.bias is not None:
        bound = 1.0 / math.sqrt(w[0].numel())  # fan_in: in_channels / groups x kernel area
        nn.init.uniform_(conv.bias, -bound, bound)
    return torch.where(small, 1.0, kept_grad_scale).to(w.dtype)


def epoch_lr_factors(epochs: int) -> list[float]:
    """The team's per-epoch learning-rate factors: linear up over ``(epochs + 1) // 2`` steps
    of ``epochs + 1``, then down, read after the scheduler's first step (5 -> [1/3, 2/3, 1,
    2/3, 1/3])."""
    up, total = (epochs + 1) // 2, epochs + 1
    return [c / up if c <= up else (total - c) / (total - up) for c in range(1, epochs + 1)]


def first_samples(batches: Iterable, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches until ``n`` samples have been yielded, the last one cut to fit."""
    left = n
    if left <= 0:
        return
    for x, y in batches:
        yield x[:left], y[:left]
        left -= len(y)
        if left <= 0:  # stop before fetching another batch
            return


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
    redraw_conv_bias: bool = True,
    epochs: int = 5,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    if not 0.0 <= reinit_fraction <= 1.0:
        raise ValueError(f"reinit_fraction must lie in [0, 1], got {reinit_fraction}")
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain, n_forget = count_batches(retain), count_batches(forget)
    planned = epochs * n_retain
    # the retain subset's batches are counted as the forget set's (exact for equal batch sizes)
    loop = TrainLoop(
        deadline, planned_steps=2 * n_forget + planned, full_steps=2 * n_forget, device=device
    )
    convs = layers_of_type(net, nn.Conv2d)

    # 1. Gradients of -CE(forget) + CE(a retain subset as large), in eval mode.
    net.eval()
    net.zero_grad(set_to_none=True)
    seen = 0  # forget samples

    def forget_grad_step(batch):
        nonlocal seen
        x, y = batch
        loss = -F.cross_entropy(net(x), y)
        loss.backward()
        seen += len(y)
        return loss

    def retain_grad_step(batch):
        x, y = batch
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        return loss

    loop.run(device_batches(forget, device), forget_grad_step, steps=n_forget, full=True)
    # at most `seen` batches; the subset ends once it holds `seen` samples
    subset = first_samples(device_batches(retain, device), seen)
    loop.run(subset, retain_grad_step, steps=seen, full=True)

    # 2. Redraw the smallest-gradient conv weights; slow the kept ones down.
    masks = {
        conv.weight: reinit_small_gradients(
            conv, reinit_fraction, kept_grad_scale, redraw_bias=redraw_conv_bias
        )
        for conv in convs
    }
    net.zero_grad(set_to_none=True)

    # 3. Fine-tune on retain: the masks scale the loss gradients, SGD adds the full decay.
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
    )
    step = cross_entropy_step(net, optimizer, before_step=lambda: apply_grad_masks(masks))
    net.train()
    done = 0
    for factor in epoch_lr_factors(epochs):  # LinearAnnealingLR, stepped once per epoch
        if loop.stopped:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr * factor
        done += loop.run(device_batches(retain, device), step, steps=n_retain)
    warn_if_recovery_cut("masked_small_gradients", done=done, planned=planned, budget_s=budget_s,
                         steps=f"fine-tuning steps ({epochs} epochs)",
                         damage=f"{reinit_fraction:.0%} of every conv's weights were redrawn",
                         category=MaskedSmallGradientsBudgetWarning)  # fmt: skip
    return net.eval()
