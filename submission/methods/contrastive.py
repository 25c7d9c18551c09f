"""Contrastive unlearning: pull forget embeddings away from their class, toward the others.

Recipe (Lee et al., "Contrastive Unlearning: A Contrastive Approach to Machine Unlearning",
ICLR 2025 submission, IJCAI 2025; official code ``Hongkyu-Lee/Contrastive-Unlearning``,
``core/trainer/unlearn/unlearn.py`` ``Loss_v1``/``Loss_v2`` and ``core/args/parse.py``):
embeddings are L2-normalised; every forget sample is an anchor, retain samples of *other*
classes pull it and retain samples of its *own* class push it away; the loss is
:func:`contrastive_unlearning_loss` at temperature 0.7 (``--temp``), the total
``3 * contrastive + 1 * CE(retain)`` (``CT_ratio``, ``CE_ratio``); each forget batch is used
for 4 steps, each with the next retain batch cut to the forget batch's size
(``retain_sampling_freq``); SGD lr 1e-3, momentum 0.9 and no weight decay (the code's
optimizer takes none, though it parses ``w_decay``); after every pass over the forget set it
stops once the forget accuracy is at or below the current test accuracy (the random-sample
rule of ``unlearn.py``); at most 30 passes (the README's random-sample command; the parser's
default is 3).

Adapted: the embedding is the model's L2-normalised penultimate features (the code adds a
128-d projection head, which the competition's model has not), and the logits are the
model's own; the "test" accuracy is the accuracy on ``val`` (what a submission gets to see),
measured afresh after each pass, as the code measures its test set, and on the whole of both
sets under a budget too (the rule is the paper's only when it reads them whole); the retain
batches run on from one stream over the (shuffled) retain loader. As shipped, the code builds
its retain loader without the random sampler meant for it (``Data_Loader`` calls
``Sampler_Loader`` without ``is_train``, so that sampler is never made) and restarts the
unshuffled retain iterator for every forget batch, reading the same first 4 retain batches
each time; the kit draws on, as that sampler would have. An anchor with no retain sample of
its class gets the code's single-class rule (+1 inside the log) instead of the infinite loss
its random-sample branch would give, and one with no sample of another class is skipped.
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
    """The official contrastive unlearning loss (``Loss_v1``), a scalar.

    ``anchors`` (A, D), forget embeddings, and ``others`` (R, D), retain embeddings, are
    L2-normalised. With ``s_ij = a_i . o_j / T`` less its row maximum ``m_i`` (detached, for
    stability), ``P_i = sum over same-class j of (exp(s_ij) + 1e-20)`` and ``n_i`` retain
    samples of other classes, anchor i's loss is
    ``-(sum over other-class j of s_ij - R * log P_i) / n_i``: the log-sum-exp runs over
    same-class samples only (not the standard supervised-contrastive denominator), and, as
    in the code, it is subtracted once per retain sample (``R`` times), not once. Anchors
    without a same-class sample use ``P_i + 1``; anchors without another class are skipped.
    """
    logits = anchors @ others.T / temperature  # (A, R)
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    same = anchor_labels[:, None] == other_labels[None, :]
    other = (~same).to(logits.dtype)
    positives = ((torch.exp(logits) + 1e-20) * same).sum(1) + (~same.any(1)).to(logits.dtype)
    log_prob = logits * other - torch.log(positives)[:, None]  # every column: as the code
    counts = other.sum(1)
    has = counts > 0
    if not has.any():
        return anchors.sum() * 0.0
    return (-log_prob.sum(1)[has] / counts[has]).mean()


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
    retain_batches: int = 4,
    max_epochs: int = 30,
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
    # The accuracy passes run in a loop of their own (their steps are far cheaper), and whole:
    # the stopping rule compares the accuracies of the two sets, not of parts of them.
    planned_checks = max_epochs * (n_val + n_forget)
    checks = TrainLoop(
        deadline, planned_steps=planned_checks, full_steps=planned_checks, device=device
    )
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
        checks.run(device_batches(loader, device), count, steps=steps, full=True)
        return correct / total if total else None

    def pairs():
        r_it = cycle_batches(retain, device)
        for f_batch in device_batches(forget, device):
            for _ in range(retain_batches):
                yield f_batch, next(r_it)

    def step(batch):
        (xf, yf), (xr, yr) = batch
        xr, yr = xr[: len(xf)], yr[: len(xf)]  # the code cuts the retain batch to the forget's
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
        forgotten, unseen = accuracy(forget, n_forget), accuracy(val, n_val)
        if unseen is None or forgotten is None or forgotten <= unseen:
            break
    return net.eval()
