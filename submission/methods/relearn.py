"""Relearn: start each run from (nearly) fresh weights when the budget can relearn them, else
perturb gently; either way relearn on the retain set alone.

Why (the kit's own method, 2026): the competition's attack compares, per forget example, the
confidences of N unlearned runs with those of N models retrained from scratch without the forget
set. The closest thing to a retraining that fits in a fifth of one is a retraining from a fresh
start, compressed, if the budget can relearn the task at all. So the method first estimates how
many epochs of reset-regime relearning the budget affords (:func:`estimated_reset_epochs`: two
timed forwards of the network, a reset step counted as ``RESET_STEP_FORWARDS`` of them), and
runs one of two regimes:

- **reset** (at least ``reset_from_epochs`` epochs fit, and the original is not saturated on
  held-out data, below; in the competition-shaped setting 20% of one retraining affords about
  2-3 epochs of its steps, which also run the teacher): keep only
  the largest ``keep`` share of all conv and linear weights and biases by one global magnitude
  threshold, redraw the other weights from their layers' uniform fan-in initialisation (the
  damage of ``prune_reinit``; BatchNorm layers keep their parameters and statistics), then
  relearn for ``epochs`` planned epochs (scaled to the budget) with Adam at ``lr`` on a
  one-cycle schedule (warm-up over the first ``warmup`` share, cosine to 0), the loss being
  cross-entropy plus ``distill_weight`` times the original's soft outputs on the same retain
  batch (``teacher_kl`` at ``temperature``, Hinton et al. 2015). The forget examples are never
  seen and no retain example reinforces them, so what the network says about them is what it
  generalises, as for a retrained model; each run's redraw gives it its own seed-like spread.
- **perturb** (fewer fit: on digits with the small CNN's 10-epoch recipe, about 1; or the
  original is saturated): a network redrawn that far cannot relearn its task in so few steps,
  or not to the confidence the retrained models have, so the run is ``shrink_perturb``
  with its defaults (its weights kept, a fresh draw mixed in sized by the epochs that fit,
  fine-tuned on retain at a rate sized by them too; ``perturb`` and ``perturb_lr`` are its
  ``perturb`` and ``lr``).

The estimate costs two forwards and no step, so neither regime spends its budget on the choice.
It errs towards "reset fits" (the optimizer's update is not counted; the training steps
measured cost more than three forwards: ``python -m bench.reset_step`` times them on a device),
and the reset regime checks it on its own first timed steps (:func:`measured_reset_epochs`, the
fastest of the loop's probe steps): if they show fewer than ``reset_from_epochs`` epochs fit,
the original (kept as the teacher) is restored and the run continues as ``shrink_perturb`` in
the time left. A wrong estimate thus costs a few steps, and only in the direction it errs. A
machine where a training step costs under three forwards would keep runs in the perturb regime
that could reset; none was measured.

Saturation: a network relearned for a few epochs from 1% of its weights reaches a modest
held-out confidence, whatever its budget allows beyond that. Where the original's recipe trains
to saturation (its median log-odds of the true class on the validation set, read once by
:func:`median_logodds` from at most ``HELD_OUT_EXAMPLES`` examples, at or above
``reset_below_logodds``), the retrained models are as saturated on the forget examples; reset
runs then fall far below them there, and the attack tells them apart on almost every example,
so such a run takes the perturb regime however large its budget. Without that rule a budget
larger than the competition's on the bundled digits (small CNN, 10-epoch recipe) sent runs
into the reset regime and the score to about 0 (docs/leaderboard.md). Only a run whose budget
fits the reset regime reads the validation set.

An epoch, in both regimes and in the estimates, is one pass over the retain set, or several
over a retain set much smaller than the digits the defaults were chosen on
(:func:`~submission.batches.epoch_passes`: the stubs' 216 examples make 5 passes an epoch).

``regime`` forces one ("reset" or "perturb"; a forced reset is not checked); the default
``"auto"`` chooses. With ``budget_s=None`` (and an original not saturated) all ``epochs`` (6) of
the reset regime run, more than 20% of a short recipe's retraining: pass the budget.

Recipe (the kit's own, 2026, combining the 5th-ranked NeurIPS 2023 competition team's damage,
Hinton, Vinyals and Dean's distillation ("Distilling the Knowledge in a Neural Network", 2015)
and Ash and Adams' shrink-and-perturb, 2020). Where its numbers come from: ``keep`` 1% and the
global threshold are the 5th-ranked team's (``prune_reinit``); the rates are the kit's, chosen
on the competition-shaped setting with a design seed (seed 1, which the boards in
docs/leaderboard.md do not use) within the range the competition's teams used for their
ResNet-18s (2e-4 to 1e-3): lower rates left the runs less accurate than the retrained models,
higher ones made them more confident than the retrained models on the forget set and closer
together. ``distill_weight`` 0.25 scored best of 0, 0.25, 0.5 and 1 there (why a little of the
teacher helps and more hurts was not established). ``perturb_lr`` and the perturbation and
rate rules are ``shrink_perturb``'s (chosen on digits with random forgetting).
``reset_from_epochs`` 1.5 lies between the two settings it was chosen for (20% of one
retraining fits about 1 epoch of the random board's reset steps, 2-3 of the competition-shaped
setting's), nearer the first: each run measures the epochs that fit, and a slow stretch of
the machine only lowers them, so a threshold midway (2) sent some runs of the
competition-shaped setting into the perturb regime, a different method for those runs only
(the measured spread: docs/leaderboard.md). No score was compared to choose it.
``reset_below_logodds`` 5 (a median true-class probability of about
0.993) lies between the originals' held-out confidences of the settings measured on the design
seed: each setting whose original read under about 2.5 (the organisers' recipe: the narrow
ResNet-18 with persons or random forgetting, the small CNN with random forgetting) scored
higher in the reset regime than in the perturb regime, 28x28 MNIST (about 3) scored well in
it, and each reading about 8 or more (the small CNN's 10-epoch recipe, with either forget set,
given the budget to reset) scored near 0 in it and well in the perturb regime. Nothing was
measured between on the design seed. Torchvision's ResNet-18 with the organisers' recipe on
28x28 MNIST (checked on the boards' seed, not to choose the threshold) reads between, about
7.4: the rule takes the perturb regime there, and the reset regime forced on the same
references scored no better. Neither regime was tried on 32x32 images, whose held-out
confidence under the competition's recipes is not known here: compare the two with
``python -m local_eval leaderboard --methods 'relearn,relearn[regime=reset]'`` there. Scores,
and the variants tried on the design seed that did worse: docs/leaderboard.md.
"""

import inspect
import math
import time

import torch
import torch.nn.functional as F

from ..batches import count_batches, device_batches, epoch_passes
from ..devices import synchronize
from ..helpers import device_of, frozen_copy, teacher_kl
from ..loop import MARGIN, Deadline, Schedule, TrainLoop, one_cycle
from ..registry import register
from .prune_reinit import prune_and_redraw
from .shrink_perturb import perturb_then_relearn, shrink_perturb

REGIMES = ("auto", "reset", "perturb")

# A reset step, in forwards of the network: its own forward and backward (about twice the
# forward's arithmetic) and the teacher's forward; the optimizer's update not counted, so the
# estimate errs towards "it fits", which the reset loop's own timed steps then check.
RESET_STEP_FORWARDS = 4.0


HELD_OUT_EXAMPLES = 256  # validation examples median_logodds reads (at most): one forward pass


SHRINK_PERTURB_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(shrink_perturb).parameters.items()
    if p.kind is p.KEYWORD_ONLY and name != "budget_s"
}


def choose_regime(
    epochs_that_fit: float,
    *,
    reset_from_epochs: float,
    held_out_logodds: float = math.nan,
    reset_below_logodds: float = math.inf,
) -> str:
    """``"reset"`` when at least ``reset_from_epochs`` epochs of relearning fit and the
    original's held-out confidence (``held_out_logodds``, :func:`median_logodds` on val; not
    known: ``nan``) is below ``reset_below_logodds``, else ``"perturb"`` (see the module
    docstring)."""
    saturated = math.isfinite(held_out_logodds) and held_out_logodds >= reset_below_logodds
    return "reset" if epochs_that_fit >= reset_from_epochs and not saturated else "perturb"


@torch.no_grad()
def median_logodds(net, loader, device, *, limit: int = HELD_OUT_EXAMPLES) -> float:
    """The median log-odds of the true class, ``z_y - logsumexp(z_others)``, of ``net`` in
    eval mode on the first ``limit`` examples of ``loader`` (the quantity the competition's
    attack reads); ``nan`` for an empty loader. Leaves ``net`` in the mode it was in and
    torch's global random stream where it was."""
    was_training = net.training
    net.eval()
    scores, seen = [], 0
    with torch.random.fork_rng(devices=[]):
        for x, y in device_batches(loader, device):
            z, y = net(x[: limit - seen]).double(), y[: limit - seen]
            true = z.gather(1, y[:, None])[:, 0]
            others = z.scatter(1, y[:, None], -math.inf)
            scores.append(true - torch.logsumexp(others, dim=1))
            seen += len(y)
            if seen >= limit:
                break
    net.train(was_training)
    return torch.cat(scores).median().item() if scores else math.nan


def _epochs_in(seconds: float, per_step_s: float, steps_per_epoch: int) -> float:
    return max(seconds, 0.0) / max(per_step_s, 1e-12) / max(steps_per_epoch, 1)


def epoch_steps(retain) -> int:
    """Steps in one of the reset regime's epochs: the batches of ``epoch_passes(retain)``
    passes over ``retain`` (one pass, unless the retain set is small:
    :func:`~submission.batches.epoch_passes`)."""
    return count_batches(retain) * epoch_passes(retain)


def estimated_reset_epochs(
    net, batch, deadline: Deadline, steps_per_epoch: int, *, margin: float = MARGIN
) -> float:
    """Epochs of reset-regime steps that ``deadline`` affords, estimated before any step: the
    faster of two timed eval-mode forwards of ``net`` on ``batch``, times
    :data:`RESET_STEP_FORWARDS`. ``margin`` is the training loop's (the share of the time left
    that it plans to use). Leaves ``net`` as it was (eval-mode forwards move no BatchNorm
    statistic)."""
    if deadline.budget_s is None:
        return math.inf
    x, _ = batch
    was_training = net.training
    net.eval()
    forwards = []
    with torch.no_grad():
        for _ in range(2):
            start = time.perf_counter()
            net(x)
            synchronize(x.device)
            forwards.append(time.perf_counter() - start)
    net.train(was_training)
    per_step_s = RESET_STEP_FORWARDS * min(forwards)
    return _epochs_in(margin * deadline.remaining(), per_step_s, steps_per_epoch)


def measured_reset_epochs(loop: TrainLoop, steps_per_epoch: int) -> float:
    """Epochs of reset-regime steps that the budget left affords, from ``loop``'s fastest timed
    step (a reset step, teacher included). The fastest, not the mean: the question is how fast
    this machine runs the steps, and the first steps carry one-off costs (Adam's first update,
    the loader's start-up) and momentary slowdowns."""
    if loop.deadline.budget_s is None:
        return math.inf
    return _epochs_in(loop.margin * loop.deadline.remaining(), loop.fastest_step_s, steps_per_epoch)


def first_batch(loader, device):
    """The first batch of one pass over ``loader``, without moving torch's global random
    stream (a shuffling loader seeds its pass from it; a loader with its own generator still
    moves that one)."""
    with torch.random.fork_rng(devices=[]):
        return next(iter(device_batches(loader, device)))


def reset_step(net, teacher, optimizer, batch, *, distill_weight: float, temperature: float):
    """One step of the reset regime on ``batch``: cross-entropy plus ``distill_weight`` times
    the teacher's soft outputs (:func:`~submission.helpers.teacher_kl` at ``temperature``),
    then ``optimizer``'s update. Returns the loss. (``bench.reset_step`` times this step
    against the forwards that :data:`RESET_STEP_FORWARDS` counts it as.)"""
    x, y = batch
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    if distill_weight > 0:
        with torch.no_grad():
            target = teacher(x)
        loss = loss + distill_weight * teacher_kl(logits, target, temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


class _TooSlow(Exception):
    """Raised in the reset loop when its own timed steps show too few epochs fit."""


def auto_regime(
    net, retain, val, deadline: Deadline, *, epochs: int, reset_from_epochs: float,
    reset_below_logodds: float,
) -> tuple[str, float, float]:  # fmt: skip
    """The regime ``relearn`` chooses for ``net`` under ``deadline`` (see the module
    docstring), with what it read: ``(regime, epochs that fit (at most epochs), the original's
    held-out median log-odds)``, the last ``nan`` where the validation set was not read (no
    ``val``, or too few epochs fit for it to matter)."""
    device = device_of(net)
    fits = estimated_reset_epochs(net, first_batch(retain, device), deadline, epoch_steps(retain))
    fits = min(epochs, fits)
    could_reset = val is not None and fits >= reset_from_epochs  # else val is not read
    held_out = median_logodds(net, val, device) if could_reset else math.nan
    regime = choose_regime(
        fits,
        reset_from_epochs=reset_from_epochs,
        held_out_logodds=held_out,
        reset_below_logodds=reset_below_logodds,
    )
    return regime, fits, held_out


@register("relearn")
def relearn(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    regime: str = "auto",
    epochs: int = 6,
    reset_from_epochs: float = 1.5,
    reset_below_logodds: float = 5.0,
    keep: float = 0.01,
    lr: float = 7e-4,
    temperature: float = 2.0,
    distill_weight: float = 0.25,
    warmup: float = 0.25,
    perturb: float | None = None,
    perturb_lr: float = 3e-3,
):
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must lie in [0, 1], got {keep}")
    if epochs < 1 or temperature <= 0 or distill_weight < 0:
        raise ValueError(
            f"need epochs >= 1, temperature > 0 and distill_weight >= 0; got epochs={epochs}, "
            f"temperature={temperature}, distill_weight={distill_weight}"
        )
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = count_batches(retain)
    passes = epoch_passes(retain)  # passes over retain in one epoch (several if it is small)
    settings = {**SHRINK_PERTURB_DEFAULTS, "perturb": perturb, "lr": perturb_lr}
    checked = regime != "auto"  # a forced regime is not second-guessed
    if regime == "auto":
        regime, _, _ = auto_regime(
            net,
            retain,
            val,
            deadline,
            epochs=epochs,
            reset_from_epochs=reset_from_epochs,
            reset_below_logodds=reset_below_logodds,
        )
    if regime == "perturb":  # shrink_perturb's run, with its defaults
        perturb_then_relearn(net, retain, deadline, **settings)
        return net.eval()

    teacher = frozen_copy(net)  # the original: the distillation target, and the fallback
    steps_per_epoch = passes * n_retain  # what epoch_steps(retain) gives, parts kept for the loop
    planned = epochs * steps_per_epoch
    loop = TrainLoop(deadline, planned_steps=planned, device=device)
    prune_and_redraw(net, 1.0 - keep)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = Schedule(optimizer, one_cycle(warmup), planned_steps=planned)

    def step(batch):
        nonlocal checked
        if not checked and loop.calibrated:  # the estimate, checked against real steps
            checked = True
            fits = min(epochs, measured_reset_epochs(loop, steps_per_epoch))
            if choose_regime(fits, reset_from_epochs=reset_from_epochs) == "perturb":
                raise _TooSlow
        return reset_step(
            net, teacher, optimizer, batch, distill_weight=distill_weight, temperature=temperature
        )

    net.train()
    try:
        loop.run_epochs(
            epochs * passes,
            lambda: device_batches(retain, device),
            step,
            steps=n_retain,
            schedules=(schedule,),
        )
    except _TooSlow:  # back to the original, and shrink_perturb's run in the time left
        net.load_state_dict(teacher.state_dict())
        perturb_then_relearn(net, retain, deadline, **settings)
    return net.eval()
