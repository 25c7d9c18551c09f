"""SCRUB: a student that stays close to the original (teacher) on retain and moves away on forget.

Recipe (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning", NeurIPS; the defaults of
their ``large_scale_unlearning.ipynb``, ResNet-18 on CIFAR: its hyperparameter, optimizer and
loop cells): student = the network, teacher = a frozen copy of the original. For the first
``msteps`` epochs a max-step over the forget set maximises KL(teacher || student) at
temperature T = 4 (``DistillKL``: times T^2); then every epoch a min-step over the retain set
minimises ``gamma * CE + alpha * KL`` (gamma 0.99, alpha 0.001); 3 epochs, SGD lr 5e-4,
momentum 0.9, weight decay 5e-4, one optimizer for both steps, the rate constant over the 3
epochs (its decay epochs 3, 5, 9 start after them).

Batches: the notebook's loaders take 512 forget and 256 retain examples a step. The
competition's loaders hold 64, so with ``forget_batch=512`` and ``retain_batch=256`` each step
accumulates the gradients of as many loader batches (8 and 4) and so takes the published number
of steps at the published rate (the mean loss over the group's examples, a shorter last group
included); BatchNorm still normalises each loader batch on its own, and the budget is still
checked after every loader batch. ``None`` takes one step a loader batch (8 and 4 times the
steps), as does a loader whose batch size is unknown (one without ``batch_size``).

Under a budget the max-steps run whole (the forget set is small and they do the forgetting);
the min-steps take what is left.
"""

import torch
import torch.nn.functional as F

from ..batches import count_batches, device_batches, group_size
from ..helpers import device_of, frozen_copy, teacher_kl
from ..loop import Deadline, TrainLoop
from ..registry import register


class GroupedSteps:
    """One optimizer step per ``size`` loader batches, on the mean loss over their examples.

    ``step(batch)`` adds one batch's gradient (its summed loss); every ``size``-th batch, and
    at :meth:`flush` (a phase's end, or where a budget cut it), the gradient is divided by the
    examples added and the optimizer steps.
    """

    def __init__(self, optimizer, params, loss_of, size: int):
        self.optimizer, self.params, self.loss_of, self.size = optimizer, params, loss_of, size
        self.batches = self.examples = 0

    def step(self, batch):
        x, y = batch
        if self.batches == 0:
            self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_of(x, y)
        (loss * len(y)).backward()
        self.batches += 1
        self.examples += len(y)
        if self.batches == self.size:
            self.flush()
        return loss

    def flush(self) -> None:
        if self.batches == 0:
            return
        for p in self.params:
            if p.grad is not None:
                p.grad.div_(self.examples)
        self.optimizer.step()
        self.batches = self.examples = 0


@register("scrub")
def scrub(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    epochs: int = 3,
    msteps: int = 2,
    gamma: float = 0.99,
    alpha: float = 0.001,
    temperature: float = 4.0,
    lr: float = 5e-4,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    forget_batch: int | None = 512,
    retain_batch: int | None = 256,
):
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain, n_forget = count_batches(retain), count_batches(forget)
    max_epochs = min(msteps, epochs)
    loop = TrainLoop(
        deadline,
        planned_steps=max_epochs * n_forget + epochs * n_retain,
        full_steps=max_epochs * n_forget,
        device=device,
    )
    teacher = frozen_copy(net)
    params = list(net.parameters())
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def max_loss(x, y):
        with torch.no_grad():
            target = teacher(x)
        return -teacher_kl(net(x), target, temperature)

    def min_loss(x, y):
        with torch.no_grad():
            target = teacher(x)
        logits = net(x)
        return gamma * F.cross_entropy(logits, y) + alpha * teacher_kl(logits, target, temperature)

    max_steps = GroupedSteps(optimizer, params, max_loss, group_size(forget, forget_batch))
    min_steps = GroupedSteps(optimizer, params, min_loss, group_size(retain, retain_batch))
    net.train()
    for epoch in range(epochs):
        if epoch < max_epochs:
            loop.run(device_batches(forget, device), max_steps.step, steps=n_forget, full=True)
            max_steps.flush()
        loop.run(device_batches(retain, device), min_steps.step, steps=n_retain)
        min_steps.flush()
        if loop.stopped:
            break
    return net.eval()
