"""The job's time budget: how long runs take, how many fit."""

import time


def duration(seconds: float) -> str:
    """``'42 s'``, ``'12.5 min'`` or ``'3.20 h'``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


class BudgetWatch:
    """Projects the job's total time from the runs so far and refuses runs that cannot fit."""

    def __init__(
        self, total_s: float, todo: int, *, prior_s: float = 0.0, warn_after: int = 2, clock=None
    ):
        self.clock = clock or time.perf_counter
        self.total_s = total_s
        self.prior_s = prior_s  # expected seconds of a run before any was measured
        self.todo = todo
        self.start = self.clock()
        self.run_seconds: list[float] = []
        self.warn_after = warn_after
        self.warned = False

    def elapsed(self) -> float:
        return self.clock() - self.start

    def estimate(self) -> float:
        """Seconds the next run will take (mean of the runs so far, slowest-weighted)."""
        if not self.run_seconds:
            return self.prior_s
        mean = sum(self.run_seconds) / len(self.run_seconds)
        return max(mean, 0.5 * (mean + max(self.run_seconds)))

    def can_start(self) -> bool:
        return self.elapsed() + self.estimate() <= self.total_s

    def runs_that_fit(self) -> int:
        per_run = self.estimate()
        if per_run <= 0:
            return self.todo
        return len(self.run_seconds) + int(max(self.total_s - self.elapsed(), 0) // per_run)

    def record(self, seconds: float) -> str | None:
        """Add a run; returns a warning the first time the projection overshoots."""
        self.run_seconds.append(seconds)
        if self.warned or len(self.run_seconds) < min(self.warn_after, self.todo):
            return None
        projected = self.elapsed() + self.estimate() * (self.todo - len(self.run_seconds))
        if projected <= self.total_s:
            return None
        self.warned = True
        return (
            f"warning: at {self.estimate():.2f} s per run the {self.todo} runs need about "
            f"{duration(projected)}, over the {duration(self.total_s)} budget; "
            f"about {self.runs_that_fit()} of them fit"
        )
