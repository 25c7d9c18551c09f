"""The peak resident memory of a stretch of code in this process: ``with PeakRSS() as peak``.

Why not ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` alone: it is the peak over the
process's whole life, so in ``python -m bench`` every benchmark after the biggest one would
report that one's peak; and Linux carries it over ``fork`` + ``exec``, so a child process
started from a large parent reports at least the parent's size (the scale benchmark's
children all read their parent's size that way, their own peaks being smaller). On Linux
the kernel's high-water mark of the process's own memory (``VmHWM`` in
``/proc/self/status``) is reset by writing 5 to ``/proc/self/clear_refs``, which gives the
peak of just the code in between.
Elsewhere (or where that file cannot be written) the figure falls back to ``ru_maxrss`` and
says so (``PeakRSS.scope``).
"""

from __future__ import annotations

import resource
from pathlib import Path

__all__ = ["PeakRSS", "current_mb", "high_water_mb", "reset_high_water"]

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float | None:
    """A size line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB; None without it."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_mb() -> float:
    """The resident MB now (``VmRSS``); nan where there is no ``/proc``."""
    mb = _status_mb("VmRSS")
    return float("nan") if mb is None else mb


def high_water_mb() -> tuple[float, str]:
    """(peak resident MB, what it covers): ``VmHWM`` (since the last reset, or since this
    program started; not inherited from a parent) where there is one, else ``ru_maxrss``."""
    mb = _status_mb("VmHWM")
    if mb is not None:
        return mb, "VmHWM"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "ru_maxrss"  # KiB on Linux


def reset_high_water() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS; False where that is not possible."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakRSS:
    """``with PeakRSS() as peak: ...`` then ``peak.mb``: the peak resident MB inside the block
    (``peak.scope == "block"``), or the process's peak so far where the mark cannot be reset
    (``"process"``); ``peak.rise_mb`` is how far it rose over the resident MB at the start
    (what the block itself needed)."""

    def __init__(self) -> None:
        self.mb = float("nan")
        self.start_mb = float("nan")
        self.scope = "block"

    @property
    def rise_mb(self) -> float:
        return self.mb - self.start_mb

    def __enter__(self) -> PeakRSS:
        self.start_mb = current_mb()
        if not reset_high_water():
            self.scope = "process"
        return self

    def __exit__(self, *exc) -> None:
        self.mb, source = high_water_mb()
        if source != "VmHWM":
            self.scope = "process"
