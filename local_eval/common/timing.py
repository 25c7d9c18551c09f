"""A hard time limit for a block of code (a hang is interrupted, not waited for)."""

import contextlib
import signal
import threading

from local_eval.common.errors import RunTimeout


@contextlib.contextmanager
def time_limit(seconds: float | None, message: str):
    """Raise :class:`RunTimeout` (``message``) if the block runs longer than ``seconds``.

    Uses SIGALRM, so it works in the main thread on POSIX only (elsewhere: no limit). The
    signal interrupts Python code and sleeps; a single long C call ends before it lands.
    """
    usable = seconds is not None and hasattr(signal, "setitimer") and threading_is_main()
    if not usable:
        yield
        return

    def fire(signum, frame):
        raise RunTimeout(message)

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def threading_is_main() -> bool:

    return threading.current_thread() is threading.main_thread()
