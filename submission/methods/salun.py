"""SalUn: random-label unlearning restricted to the weights salient for the forget set.

Recipe (Fan et al. 2024, "SalUn: Empowering Machine Unlearning via Gradient-based Weight
Saliency in Both Image Classification and Generation", ICLR; ``Classification/generate_mask.py``
and the README's ``main_random.py --unlearn RL --unlearn_epochs 10 --unlearn_lr 0.013
--mask_path mask/with_0.5.pt`` of ``OPTML-Group/Unlearn-Saliency``): the saliency mask keeps
the top 50% of all weights by |gradient of the forget loss| (one pass over the forget set,
eval mode, one global threshold); then random-label training (``random_label``'s epochs:
each the forget set relabelled at random, then the retain set; 10 epochs, SGD lr 0.013,
momentum 0.9, weight decay 5e-4, constant) updates only the masked weights. Weight decay and
momentum never touch the frozen weights (as their ``_restore_masked_params`` does since
their weight-decay fix).

Under a budget the saliency pass runs whole, then as many whole epochs as fit
(``random_label``'s rule).
"""

import torch
import torch.nn.functional as F

from ..batches import count_batches, device_batches
from ..helpers import apply_grad_masks, device_of
from ..loop import Deadline, TrainLoop
from ..registry import register
from .random_label import relabelled_epochs


def saliency_masks(net, grads: dict, keep: float) -> dict:
    """Boolean masks keeping the ``keep`` fraction of entries with the largest |grad|."""
    magnitudes = torch.cat([g.abs().flatten() for g in grads.values()])
    k = max(1, round(keep * magnitudes.numel()))
    threshold = torch.topk(magnitudes, k, sorted=False).values.min()
    return {p: g.abs() >= threshold for p, g in grads.items()}


@register("salun")
def salun(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    keep: float = 0.5,
    epochs: int = 10,
    lr: float = 0.013,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
):
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must lie in (0, 1], got {keep}")
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain, n_forget = count_batches(retain), count_batches(forget)
    planned = n_forget + epochs * (n_forget + n_retain)  # saliency, then whole epochs
    loop = TrainLoop(deadline, planned_steps=planned, full_steps=planned, device=device)
    params = [p for p in net.parameters() if p.requires_grad]

    # 1. Saliency: accumulated gradient of the forget loss (eval mode: BN statistics untouched).
    net.eval()
    net.zero_grad(set_to_none=True)

    def grad_step(batch):
        x, y = batch
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        return loss

    loop.run(device_batches(forget, device), grad_step, steps=n_forget, full=True)
    grads = {
        p: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)) for p in params
    }
    masks = saliency_masks(net, grads, keep)
    net.zero_grad(set_to_none=True)

    # 2. Random-label training of the salient weights only (decay folded into the mask).
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=0.0)
    relabelled_epochs(
        net, optimizer, retain, forget, loop, epochs=epochs,
        before_step=lambda: apply_grad_masks(masks, weight_decay=weight_decay),
    )  # fmt: skip
    return net.eval()
