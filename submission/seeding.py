"""One helper to seed a run: Python, numpy and torch (all devices) from one integer."""

import random

import numpy as np
import torch

__all__ = ["seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy's global generator and torch's generators (CPU and CUDA)."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (code may use the legacy global generator)
    torch.manual_seed(seed)  # also seeds every CUDA device
