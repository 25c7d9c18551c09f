"""Signals: a model's outputs on a split, extracted once (eval mode, no gradients) as arrays.

Everything downstream (the metric, the report, the sanity-check attack) works on these numpy
arrays, never on models.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .data import Split

__all__ = ["accuracy", "example_losses", "model_logits"]

EVAL_BATCH = 1024  # examples per forward pass when extracting signals


@torch.no_grad()
def model_logits(
    model: nn.Module, split: Split, *, device: torch.device | str, batch_size: int = EVAL_BATCH
) -> np.ndarray:
    """Logits float32 ``(n, C)`` of ``model`` on ``split``, in the split's order.

    The model is put in eval mode (and left there).
    """
    model.eval()
    parts = [
        model(split.images[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(split), batch_size)
    ]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(parts).numpy()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose arg-max is the label (``logits`` (n, C), ``labels`` (n,))."""
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def example_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cross-entropy per example, float64 ``(n,)``, from logits ``(n, C)``."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(labels)), labels]
