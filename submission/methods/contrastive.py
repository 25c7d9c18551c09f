"""Contrastive unlearning: pull forget embeddings away from their class, toward the others.

Recipe (Lee et al., "Contrastive Unlearning: A Contrastive Approach to Machine Unlearning",
ICLR 2025 submission): embeddings are the L2-normalised penultimate features. Every forget
sample is an anchor; retain samples of *other* classes are its positives and retain samples of
its own class its negatives, in a supervised contrastive loss at temperature 0.7; the total
loss is ``3 * contrastive + 1 * CE(retain)``; several retain batches per forget batch; SGD
lr 1e-3; training stops once the forget accuracy has fallen to the accuracy on unseen data.

Adapted: each step pairs the current forget batch with one retain batch, and every forget
batch is used for ``retain_batches`` consecutive steps (5: "several" in the paper); the
unseen-data level is the original model's accuracy on ``val`` (one pass before training);
the forget accuracy is checked after every pass over the forget set, ``max_epochs`` passes at
most. Momentum 0.9 and no weight decay (not stated in methods.md).
"""

import torch
import torch.nn.functional as F

from ..batches import count_batches, cycle_batches, device_batches
from ..helpers import device_of, penultimate_features
from ..loop import Deadline, TrainLoop
from ..registry import register


def contrastive_unlearning_loss(
    anchors: torch.Tensor,
    anchor_labels: torch.Tensor,
    others: torch.Tensor,
    other_labels: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Supervised contrastive loss with the positives inverted (forget anchors, retain others).

    ``anchors`` (A, D) and ``others`` (R, D) are L2-normalised embeddings. For anchor ``i`` the
    positives are the others with a *different* label: ``-mean_p log softmax_j(z_i . z_j / T)[p]``
    over all others ``j``. Anchors without any positive are skipped; returns a scalar.
    """
    logits = anchors @ others.T / temperature  # (A, R)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (anchor_labels[:, None] != other_labels[None, :]).to(log_prob.dtype)
    counts = positive.sum(1)
    has = counts > 0
    if not has.any():
        return anchors.sum() * 0.0
    per_anchor = -(log_prob * positive).sum(1)[has] / counts[has]
    return per_anchor.mean()


@register("contrastive")
def contrastive(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    temperature: float = 0.7,
    contrastive_weight: float = 3.0,
    ce_weight: float = 1.0,
    retain_batches: int = 5,
    max_epochs: int = 10,
    lr: float = 1e-3,
    momentum: float = 0.9,
):
    if retain_batches < 1 or max_epochs < 1:
        raise ValueError(
            f"retain_batches and max_epochs must be >= 1, got {retain_batches}, {max_epochs}"
        )
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_forget, n_val = count_batches(forget), count_batches(val)
    per_epoch = n_forget * retain_batches
    # The accuracy passes run in a loop of their own: their steps are far cheaper.
    checks = TrainLoop(deadline, planned_steps=n_val + max_epochs * n_forget, device=device)
    loop = TrainLoop(deadline, planned_steps=max_epochs * per_epoch, device=device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)

    def accuracy(loader, steps):
        correct, total = 0, 0

        @torch.no_grad()
        def count(batch):
            nonlocal correct, total
            x, y = batch
            correct += (net(x).argmax(1) == y).sum().item()
            total += len(y)

        net.eval()
        checks.run(device_batches(loader, device), count, steps=steps)
        return correct / total if total else None

    unseen = accuracy(val, n_val)

    def pairs():
        r_it = cycle_batches(retain, device)
        for f_batch in device_batches(forget, device):
            for _ in range(retain_batches):
                yield f_batch, next(r_it)

    def step(batch):
        (xf, yf), (xr, yr) = batch
        optimizer.zero_grad(set_to_none=True)
        feats, logits = penultimate_features(net, torch.cat([xf, xr]))
        z = F.normalize(feats, dim=1)
        k = len(xf)
        loss = contrastive_weight * contrastive_unlearning_loss(
            z[:k], yf, z[k:], yr, temperature
        ) + ce_weight * F.cross_entropy(logits[k:], yr)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(max_epochs):
        net.train()
        loop.run(pairs(), step, steps=per_epoch)
        if loop.stopped:
            break
        forgotten = accuracy(forget, n_forget)
        if unseen is None or forgotten is None or forgotten <= unseen:
            break
    return net.eval()
