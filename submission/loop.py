"""The one shared training loop, with a wall-clock deadline.

A method builds one :class:`TrainLoop` per call, tells it how many steps the published recipe
plans in total, and then runs its phases (epochs, max/min steps, importance passes) through
:meth:`TrainLoop.run`, supplying only a ``step_fn`` with its own loss. The loop

- scales the work to the budget: after a few probe steps it measures the seconds per step and
  runs only the fraction of every later phase that fits (fewer steps per epoch, evenly, rather
  than dropping the last phases of a recipe);
- never starts a step it cannot finish before the deadline (a backstop to the scaling): a
  step starts only while ``STEP_RESERVE`` (1.25) average steps remain, since the last step
  may be slower than the average and the run's own work after the loop counts too (with the
  bare average, runs whose last step ran slow ended past their budget, and so past the
  organisers' cut-off where the budget is the cut-off: docs/leaderboard.md); a step slower
  than that, on a machine that stalls, can still end past it;
- drives learning-rate schedules (:class:`Schedule`) over the steps that will actually run;
- records per-phase seconds (data loading vs forward/backward/step) into the
  :func:`record_timings` collector when one is active (``python -m submission.profile``).
"""

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from .devices import synchronize

__all__ = [
    "MARGIN",
    "STEP_RESERVE",
    "Deadline",
    "Schedule",
    "Timings",
    "TrainLoop",
    "constant",
    "cosine",
    "cosine_epoch_rates",
    "one_cycle",
    "record_timings",
    "run_epochs_at",
    "warm_up",
    "warmup_linear",
]


_WARMED: set[str] = set()  # devices warmed in this process
MARGIN = 0.85  # share of the remaining budget a loop plans to use (TrainLoop's ``margin``)
STEP_RESERVE = 1.25  # average steps that must remain for another step to start


def warm_up(device: torch.device | str | None = None) -> None:
    """Pay torch's one-off lazy costs before timing anything, so they do not eat the first
    budgeted call's deadline or inflate the first model's seconds: the first optimizer
    imports ``torch._dynamo`` (seconds, on a CPU too), and on a GPU the first kernels create the
    CUDA context and the cuBLAS/cuDNN handles. With ``device``, one training step of a tiny
    convolutional model (convolution, BatchNorm, Linear, Adam) runs there. Once per device
    and process; later calls return at once."""
    name = "" if device is None else str(torch.device(device))
    if name in _WARMED:
        return
    if "" not in _WARMED:
        param = torch.nn.Parameter(torch.zeros(1))
        torch.optim.SGD([param], lr=0.0)
        torch.optim.Adam([param], lr=0.0)
        _WARMED.add("")
    if name:
        _one_tiny_step(torch.device(device))
        _WARMED.add(name)


def _one_tiny_step(device: torch.device) -> None:
    # the layers' initialisation draws from the global generator: it must not move a seeded
    # run's random stream (a run would then depend on what its process did before)
    with torch.random.fork_rng(devices=[]):
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.BatchNorm2d(4),
            torch.nn.Flatten(),
            torch.nn.Linear(4 * 8 * 8, 2),
        ).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.0)
    loss = net(torch.zeros(2, 1, 8, 8, device=device)).logsumexp(1).sum()
    loss.backward()
    optimizer.step()
    synchronize(device)


class Deadline:
    """Wall-clock budget of one method call, started at construction.

    ``budget_s=None`` means no deadline (the published recipe in full). One-off process costs
    inside the call count too; callers that time runs call :func:`warm_up` first.
    """

    def __init__(self, budget_s: float | None = None, *, clock: Callable[[], float] | None = None):
        if budget_s is not None and not (isinstance(budget_s, (int, float)) and budget_s > 0):
            raise ValueError(f"budget_s must be positive seconds or None, got {budget_s!r}")
        self.budget_s = None if budget_s is None else float(budget_s)
        self._clock = clock or time.perf_counter
        self.start = self._clock()

    def elapsed(self) -> float:
        return self._clock() - self.start

    def remaining(self) -> float:
        """Seconds left (``inf`` without a budget; may be negative once past the deadline)."""
        return math.inf if self.budget_s is None else self.budget_s - self.elapsed()


@dataclass
class Timings:
    """Seconds spent in the shared loop, summed over every loop run while recording."""

    data_s: float = 0.0  # fetching batches and moving them to the device
    step_s: float = 0.0  # forward, backward, optimizer step (the method's step_fn)
    steps: int = 0  # steps run
    planned_steps: int = 0  # steps the published recipes planned
    loops: int = 0  # TrainLoop objects created (one per method call)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


_TIMINGS: ContextVar[Timings | None] = ContextVar("submission_timings", default=None)


@contextlib.contextmanager
def record_timings() -> Iterator[Timings]:
    """Collect the shared loop's per-phase seconds while the ``with`` block runs."""
    timings = Timings()
    token = _TIMINGS.set(timings)
    try:
        yield timings
    finally:
        _TIMINGS.reset(token)


# Learning-rate shapes: multipliers of the base learning rate as a function of progress in [0, 1].
def constant(progress: float) -> float:
    return 1.0


def cosine(progress: float) -> float:
    """Cosine decay from 1 to 0 (``CosineAnnealingLR`` over the run)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def one_cycle(warmup: float = 0.25, start: float = 0.04) -> Callable[[float], float]:
    """Linear warm-up from ``start`` to 1 over the first ``warmup`` fraction, then cosine to 0
    (the shape of ``OneCycleLR`` with linear annealing up, cosine down)."""
    if not 0.0 < warmup < 1.0:
        raise ValueError(f"warmup must be a fraction in (0, 1), got {warmup}")

    def shape(progress: float) -> float:
        progress = min(max(progress, 0.0), 1.0)
        if progress < warmup:
            return start + (1.0 - start) * progress / warmup
        return cosine((progress - warmup) / (1.0 - warmup))

    return shape


def warmup_linear(warmup: float = 0.1) -> Callable[[float], float]:
    """Linear warm-up over the first ``warmup`` fraction, then linear decay to 0."""

    def shape(progress: float) -> float:
        if progress < warmup:
            return (progress + 1e-3) / warmup
        return max(0.0, (1.0 - progress) / (1.0 - warmup))

    return shape


class Schedule:
    """Sets ``optimizer``'s learning rates to ``base * shape(progress)`` before each step.

    ``planned_steps`` is the recipe's number of steps for this optimizer; the loop shrinks it
    by the budget fraction, so a shortened run still completes the whole schedule.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, shape: Callable, *, planned_steps: int):
        self.optimizer = optimizer
        self.shape = shape
        self.planned_steps = max(1, int(planned_steps))
        self.done = 0
        self.base = [group["lr"] for group in optimizer.param_groups]

    def before_step(self, fraction: float) -> None:
        total = max(1, round(self.planned_steps * fraction))
        factor = self.shape(min(self.done / total, 1.0))
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * factor
        self.done += 1

    def scale_base(self, factor: float) -> None:
        """Multiplies the base rates by ``factor``, the rate of the step under way included
        (for a rate that is only known once the loop has timed its first steps)."""
        self.base = [base * factor for base in self.base]
        for group in self.optimizer.param_groups:
            group["lr"] *= factor


class TrainLoop:
    """Runs a method's phases within one deadline; see the module docstring.

    ``planned_steps``: the steps of the published recipe over all phases of the call.
    ``full_steps``: how many of them are in phases run in full (``run(..., full=True)``):
    the cheap passes over the small forget set that do the forgetting, which a budget must
    not cut in proportion to the retain epochs; the scaled phases get what they leave.
    ``probe_steps``: steps measured before the budget fraction is first computed.
    ``margin``: share of the remaining budget the scaling plans to use (the rest absorbs
    timing noise and the work after the loop).
    """

    def __init__(
        self,
        deadline: Deadline,
        *,
        planned_steps: int,
        full_steps: int = 0,
        probe_steps: int = 3,
        margin: float = MARGIN,
        device: torch.device | None = None,
    ):
        self.deadline = deadline
        self.planned_steps = max(1, int(planned_steps))
        if not 0 <= full_steps <= self.planned_steps:
            raise ValueError(
                f"full_steps must lie in [0, planned_steps={self.planned_steps}], got {full_steps}"
            )
        self.full_steps = int(full_steps)
        self.started_full = 0  # planned steps of the full phases started so far
        self.probe_steps = probe_steps
        self.margin = margin
        self._timings = _TIMINGS.get()
        # CUDA runs asynchronously: a budget (or a timings collector) needs each step's
        # real seconds, so the loop waits for every step then; otherwise it lets the GPU
        # run ahead of Python, as a reference training does (the two are compared).
        timed = deadline.budget_s is not None or self._timings is not None
        self.sync = torch.device(device) if device is not None and timed else None
        self.fraction = 1.0  # share of each phase that runs
        self.steps = 0
        self.step_seconds = 0.0  # summed seconds per step, data included
        self.fastest_step_s = math.inf  # the quickest step so far, data included
        self.started = 0  # planned steps of the phases started so far
        self.stopped = False  # True once the deadline cut a phase short
        if self._timings is not None:
            self._timings.loops += 1
            self._timings.planned_steps += self.planned_steps

    @property
    def calibrated(self) -> bool:
        """Whether :attr:`fraction` rests on timed steps (always, without a budget: it is 1).

        A method that sizes something by the work it can afford (``shrink_perturb`` sizes its
        noise by the epochs of relearning that fit) waits for this before acting.
        """
        return self.deadline.budget_s is None or self.steps >= self.probe_steps

    @property
    def seconds_per_step(self) -> float:
        return self.step_seconds / self.steps if self.steps else 0.0

    def _rescale(self, upcoming: int, *, full: bool = False) -> None:
        """Fraction of the remaining scaled steps (``upcoming`` included) that fits, once
        the remaining full phases' steps are set aside."""
        if self.deadline.budget_s is None or self.steps < self.probe_steps:
            return
        full_left = self.full_steps - self.started_full + (upcoming if full else 0)
        scaled_started = self.started - self.started_full
        scaled_left = self.planned_steps - self.full_steps - scaled_started
        scaled_left += 0 if full else upcoming
        affordable = self.margin * self.deadline.remaining() / self.seconds_per_step
        affordable -= max(full_left, 0)
        self.fraction = min(1.0, max(affordable, 0.0) / max(scaled_left, 1))

    def run(
        self,
        batches: Iterable,
        step_fn: Callable[..., torch.Tensor | float | None],
        *,
        steps: int,
        schedules: tuple[Schedule, ...] = (),
        full: bool = False,
    ) -> int:
        """Up to ``steps`` calls of ``step_fn(batch)`` over ``batches``, scaled to the budget
        (``full``: all of them, unless the deadline itself comes; counted in ``full_steps``).

        ``step_fn`` does the forward, backward and optimizer step and may return the loss.
        Returns the number of steps run in this phase.
        """
        self.started += steps
        if full:
            self.started_full += steps
        self._rescale(steps, full=full)
        it = iter(batches)
        done = 0
        while True:
            scaled = self.fraction < 1.0 and not full
            limit = max(1, math.ceil(self.fraction * steps)) if scaled else steps
            if done >= limit or not self._fits_another():
                break
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            for schedule in schedules:  # a full phase's schedule is not compressed
                schedule.before_step(1.0 if full else self.fraction)
            loss = step_fn(batch)
            if isinstance(loss, torch.Tensor):
                loss = loss.detach()
            if self.sync is not None:
                synchronize(self.sync)
            t2 = time.perf_counter()
            done += 1
            self.steps += 1
            self.step_seconds += t2 - t0
            self.fastest_step_s = min(self.fastest_step_s, t2 - t0)
            if self._timings is not None:
                self._timings.data_s += t1 - t0
                self._timings.step_s += t2 - t1
                self._timings.steps += 1
            if self.steps == self.probe_steps:
                self._rescale(steps - done, full=full)
        return done

    def run_epochs(
        self,
        epochs: int,
        batches: Callable[[], Iterable],
        step_fn: Callable[..., torch.Tensor | float | None],
        *,
        steps: int,
        schedules: tuple[Schedule, ...] = (),
    ) -> None:
        """``epochs`` phases of :meth:`run`, each over fresh ``batches()``, until one is cut."""
        for _ in range(epochs):
            if self.stopped:
                break
            self.run(batches(), step_fn, steps=steps, schedules=schedules)

    def _fits_another(self) -> bool:
        if self.deadline.budget_s is None:
            return True
        if self.steps == 0:
            return self.deadline.remaining() > 0
        if self.deadline.remaining() < STEP_RESERVE * self.seconds_per_step:
            self.stopped = True
            return False
        return True


def cosine_epoch_rates(lr: float, epochs: int) -> list[float]:
    """Each epoch's rate under ``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch."""
    return [lr * cosine(epoch / epochs) for epoch in range(epochs)]


def run_epochs_at(
    loop: TrainLoop,
    optimizer: torch.optim.Optimizer,
    rates: Iterable[float],
    batches: Callable[[], Iterable],
    step_fn: Callable[..., torch.Tensor | float | None],
    *,
    steps: int,
) -> None:
    """One epoch of ``loop.run`` over fresh ``batches()`` per rate in ``rates``, the
    optimizer's rate set at each epoch's start (a scheduler stepped once per epoch, as
    ``CosineAnnealingLR(T_max=epochs)`` in the competition's template, whose rates
    :func:`cosine_epoch_rates` gives), until the loop stops."""
    for rate in rates:
        if loop.stopped:
            break
        for group in optimizer.param_groups:
            group["lr"] = rate
        loop.run(batches(), step_fn, steps=steps)
