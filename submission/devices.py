"""What differs on a GPU, in one place: whether a device can be used here, and the barrier
that makes a clock reading mean something.

CUDA runs asynchronously: a call returns once its kernels are queued, so ``perf_counter``
read after a training step without :func:`synchronize` times the launches, not the work.
Every timed span that ends on a device (a retraining, an unlearning run, a budgeted step)
ends with it.
"""

from __future__ import annotations

import torch

__all__ = ["cuda_problem", "synchronize"]


def cuda_problem(device: torch.device) -> str | None:
    """Why ``device`` cannot be used on this machine, or ``None`` when it can (or is not a
    CUDA device). Catches ``cuda:1`` on a one-GPU machine here rather than as an "invalid
    device ordinal" deep inside the first model moved to it."""
    if device.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return "torch sees no CUDA device on this machine"
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        return (
            f"this machine has {count} CUDA device(s), numbered 0 to {count - 1}; "
            f"there is no {device}"
        )
    return None


def synchronize(device: torch.device | str) -> None:
    """Wait until ``device`` has run everything queued on it; nothing to wait for on a CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
